"""Property tests over HTTP (Hypothesis, Django's test client, DEBUG off).

Whatever a client sends, the answer is never a 5xx, and every 4xx is the
contract's error body (API.md §2): random JSON and CBOR upload bodies (random
keys, types and values, random bytes as imageData, random timestamp strings),
mutated real images as raw uploads, random Range and validator headers on a
stored image, and random discovery filters.

The strategies include what once gave a 500 (issue #6): lone surrogates in
device ids (JSON only: cbor2 cannot encode them), CBOR integers and Range
positions past Python's 4,300-digit int/str limit, and more query
parameters than Django's 1,000.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC
from urllib.parse import quote

import cbor2
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conftest import METADATA_KEYS
from formats.linkformat import parse
from images.discovery import links_discover
from images.tests.test_hostile_inputs import GIF, JPEG, PNG, contract_errors, pillow

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.filterwarnings("ignore::UserWarning"),  # Pillow on corrupt EXIF
]

UPLOAD = "/collections/images"
FIELDS = ("deviceId", "timestamp", "imageData")
IMAGES = [PNG, GIF, JPEG, pillow("WEBP"), pillow("BMP"), pillow("TIFF")]


# Examples per property: few enough that this file runs in well under 30 s.
BUDGET = {
    "json": 300,
    "cbor": 300,
    "bytes": 150,
    "raw": 300,
    "download": 300,
    "discovery": 300,
}


def bounded(budget: str) -> settings:
    return settings(
        max_examples=BUDGET[budget],
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


# --- Strategies -------------------------------------------------------------------------

# Up to 2**70: CBOR bignums included.
integers = st.integers(min_value=-(2**70), max_value=2**70)
# json.dumps refuses integers over 4,300 digits; cbor2 writes them as bignums.
huge_integers = st.sampled_from([10**5000, -(10**5000)])
short_text = st.text(max_size=24)
scalars = st.one_of(st.none(), st.booleans(), integers, st.floats(), short_text)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(short_text, inner, max_size=4),
    max_leaves=12,
)
cbor_scalars = scalars | st.binary(max_size=64) | st.just(cbor2.undefined)
cbor_values = st.recursive(
    cbor_scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(short_text | integers, inner, max_size=4)
        | st.builds(cbor2.CBORTag, st.integers(min_value=6, max_value=2**32), inner)
    ),
    max_leaves=12,
)

valid_timestamps = st.datetimes(timezones=st.just(UTC)).map(lambda moment: moment.isoformat())
timestamps = st.one_of(
    st.datetimes().map(lambda moment: moment.isoformat()),
    st.from_regex(
        r"\A[0-9]{1,5}-[0-9]{1,2}-[0-9]{1,2}[Tt ][0-9]{1,2}:[0-9]{2}:[0-9]{2}"
        r"(\.[0-9]{0,9})?([Zz]|[+-][0-9]{2}:?[0-9]{2})?\Z"
    ),
    short_text,
)
device_ids = st.one_of(st.text(max_size=110), integers)
# Every code point, lone surrogates included: JSON can carry them (as \ud800).
# Hypothesis rarely draws those by itself: a few named ones are mixed in.
awkward = st.sampled_from(["\ud800", "\udfff", "\u202e", "\u2066", "\ufeff", "\x00", "\x85"])
# Joined by hand: st.text() leaves surrogates out even when its alphabet has them.
any_text = st.lists(st.one_of(st.characters(exclude_categories=()), awkward), max_size=110).map(
    "".join
)
image_bytes = st.one_of(st.sampled_from(IMAGES), st.binary(max_size=256))
base64_text = image_bytes.map(lambda data: base64.b64encode(data).decode())


@st.composite
def upload_bodies(
    draw: st.DrawFn,
    values: st.SearchStrategy,
    image_data: st.SearchStrategy,
    devices: st.SearchStrategy = device_ids,
) -> dict:
    """A map with any subset of the contract's keys, each well- or ill-typed, plus extra keys.

    Half start from a valid upload (a real image, a valid timestamp) and
    change some fields, so that ingest itself, not only validation, sees
    hostile values.
    """
    body = draw(st.dictionaries(short_text, values, max_size=3))
    if draw(st.booleans()):
        body |= {
            "deviceId": draw(devices),
            "timestamp": draw(valid_timestamps),
            "imageData": base64.b64encode(draw(st.sampled_from(IMAGES))).decode(),
        }
    for key, good in zip(FIELDS, (devices, timestamps, image_data), strict=True):
        if draw(st.booleans()):
            body[key] = draw(st.one_of(good, values))
    return body


# --- Checks ------------------------------------------------------------------------------


def check_contract_answer(response, *, success: tuple[int, ...] = (200, 201)) -> None:
    """No 5xx; errors in the contract's format; successes are the image's metadata."""
    status = response.status_code
    content_type = response.get("Content-Type", "")
    assert status < 500, (status, response.content[:300])
    if status >= 400:
        contract_errors(content_type, response.content)
        return
    assert status in success, status
    if content_type.startswith("application/cbor"):
        metadata = cbor2.loads(response.content)
    else:
        metadata = json.loads(response.content)
    assert set(metadata) == METADATA_KEYS


# --- Properties --------------------------------------------------------------------------


@bounded("json")
@given(
    body=upload_bodies(json_values, base64_text, st.one_of(device_ids, any_text)),
    accept=st.sampled_from(["", "*/*"]),
)
def test_a_random_json_upload_never_gives_a_5xx(client, body, accept):
    headers = {"Accept": accept} if accept else {}
    response = client.post(
        UPLOAD, json.dumps(body), content_type="application/json", headers=headers
    )
    check_contract_answer(response)


@bounded("cbor")
@given(
    body=upload_bodies(
        cbor_values, st.one_of(image_bytes, base64_text), st.one_of(device_ids, huge_integers)
    ),
    as_hex=st.booleans(),
)
def test_a_random_cbor_upload_never_gives_a_5xx(client, body, as_hex):
    data = cbor2.dumps(body)
    response = client.post(
        UPLOAD, data.hex().encode() if as_hex else data, content_type="application/cbor"
    )
    check_contract_answer(response)


@bounded("bytes")
@given(
    data=st.binary(max_size=512),
    content_type=st.sampled_from(["application/json", "application/cbor"]),
)
def test_random_bytes_as_a_json_or_cbor_body_never_give_a_5xx(client, data, content_type):
    check_contract_answer(client.post(UPLOAD, data, content_type=content_type))


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    """A real image of each format, truncated or with a few bytes overwritten."""
    data = bytearray(draw(st.sampled_from(IMAGES)))
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        position = draw(st.integers(min_value=0, max_value=len(data) - 1))
        data[position] = draw(st.integers(min_value=0, max_value=255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(min_value=0, max_value=len(data)))]
    return bytes(data)


@bounded("raw")
@given(
    data=mutated_images(),
    content_type=st.sampled_from(["application/octet-stream", "image/png", "image/jpeg"]),
    device=device_ids.map(str),
    moment=timestamps,
)
def test_a_mutated_raw_image_upload_never_gives_a_5xx(client, data, content_type, device, moment):
    path = f"{UPLOAD}?deviceId={quote(device, safe='')}&timestamp={quote(moment, safe='')}"
    check_contract_answer(client.post(path, data, content_type=content_type))


@pytest.fixture
def stored(client) -> tuple[str, bytes]:
    """One stored image: its href and the bytes it downloads as."""
    answer = client.post(
        f"{UPLOAD}?deviceId=props&timestamp=2024-01-01T00%3A00%3A00Z",
        pillow("PNG", size=(64, 48)),
        content_type="image/png",
    )
    assert answer.status_code == 201
    return answer["Location"], client.get(answer["Location"]).content


header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=60)
positions = st.one_of(
    st.just(""),
    st.integers(min_value=0, max_value=10**20).map(str),
    st.just("9" * 5000),  # past int()'s 4,300-digit limit
)
range_specs = st.builds(lambda first, last: f"{first}-{last}", positions, positions)
range_headers = st.one_of(
    st.lists(range_specs, min_size=1, max_size=20).map(lambda specs: "bytes=" + ",".join(specs)),
    header_text,
)
etags = st.one_of(
    st.just("*"),
    st.lists(
        st.builds(lambda weak, tag: f'{weak}"{tag}"', st.sampled_from(["", "W/"]), header_text),
        max_size=4,
    ).map(", ".join),
    header_text,
)
dates = st.one_of(
    st.datetimes().map(lambda moment: moment.strftime("%a, %d %b %Y %H:%M:%S GMT")),
    header_text,
)
download_headers = st.fixed_dictionaries(
    {},
    optional={
        "Range": range_headers,
        "If-None-Match": etags,
        "If-Match": etags,
        "If-Modified-Since": dates,
        "If-Unmodified-Since": dates,
        "If-Range": st.one_of(etags, dates),
        "Accept": st.one_of(st.sampled_from(["image/*", "application/json;q=0.5"]), header_text),
    },
)


@bounded("download")
@given(headers=download_headers, method=st.sampled_from(["GET", "HEAD"]))
def test_random_range_and_validator_headers_never_give_a_5xx(client, stored, headers, method):
    href, image = stored
    response = client.generic(method, href, headers=dict(headers))
    status = response.status_code
    assert status < 500, (status, headers, response.content[:300])
    assert status in (200, 206, 304, 406, 412, 416), (status, headers)
    if method == "HEAD":
        assert response.content == b""
    elif status >= 400:
        contract_errors(response["Content-Type"], response.content)
    elif status == 200 and response["Content-Type"] == "image/png" and method == "GET":
        assert response.content == image
    elif status == 206 and "Content-Range" in response:
        first, last = map(int, response["Content-Range"].split()[1].split("/")[0].split("-"))
        assert response.content == image[first : last + 1]


filter_names = st.one_of(
    st.sampled_from(["href", "rt", "if", "ct", "title", "sz", "anchor"]), short_text
)
filter_values = st.one_of(
    st.sampled_from(["/collections/images", "/collections*", "simple.act", "core.*", "*"]),
    short_text,
)
query_fields = st.one_of(
    st.builds(
        lambda name, value: f"{quote(name, safe='')}={quote(value, safe='*')}",
        filter_names,
        filter_values,
    ),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=12),
)


@bounded("discovery")
@given(
    fields=st.one_of(
        st.lists(query_fields, max_size=8),
        # Past Django's 1,000 query parameters.
        st.builds(lambda field, count: [field] * count, query_fields, st.just(1500)),
    )
)
def test_random_discovery_filters_never_give_a_5xx(client, fields):
    query = "&".join(fields)
    assume("#" not in query)
    response = client.get(f"/.well-known/core?{query}")
    assert response.status_code in (200, 400), (query, response.content[:300])
    if response.status_code == 400:
        contract_errors(response["Content-Type"], response.content)
        return
    assert response["Content-Type"] == "application/link-format"
    found = {link.href for link in parse(response.content.decode())}
    assert found <= {link.href for link in links_discover()}


def test_the_properties_try_at_least_five_hundred_examples() -> None:
    print(f"\nhypothesis: at most {sum(BUDGET.values())} examples over {len(BUDGET)} properties")
    assert sum(BUDGET.values()) >= 500
