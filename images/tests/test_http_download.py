"""API.md §3: downloads by device and time, and by id."""

from __future__ import annotations

import base64
import json

import cbor2
import pytest
from django.db import connection

from conftest import png_bytes
from formats.linkformat import parse
from images.compression import pixels_equal
from images.models import Image

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("image_storage")]

TS = "2024-08-18T02:04:07Z"
QUERY_URL = "/collections/images?deviceId={device}&timestamp=2024-08-18T02%3A04%3A07Z"


@pytest.fixture
def image_bytes() -> bytes:
    return png_bytes(size=(64, 48), seed=5)


@pytest.fixture
def stored(client, image_bytes) -> dict:
    body = {
        "deviceId": "cam/1 ü",
        "timestamp": TS,
        "imageData": base64.b64encode(image_bytes).decode(),
    }
    response = client.post("/collections/images", json.dumps(body), content_type="application/json")
    assert response.status_code == 201
    return response.json()


def by_query(device: str = "cam/1 ü") -> str:
    from urllib.parse import quote

    return QUERY_URL.format(device=quote(device, safe=""))


def test_a_download_by_query_has_every_header(client, stored, image_bytes):
    response = client.get(by_query())
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert int(response["Content-Length"]) == len(response.content) == stored["storedSize"]
    assert response["ETag"] == f'"{stored["sha256"]}"'
    assert response["Last-Modified"].endswith("GMT")
    assert response["Content-Disposition"] == (
        'inline; filename="cam_1___20240818T020407Z.png"; '
        "filename*=UTF-8''cam%2F1%20%C3%BC_20240818T020407Z.png"
    )
    assert response["X-Content-Type-Options"] == "nosniff"
    cache_control = response["Cache-Control"]
    assert "public" in cache_control
    assert "max-age=" in cache_control
    assert "no-store" not in cache_control
    assert "private" not in cache_control
    assert "sandbox" in response["Content-Security-Policy"]
    assert pixels_equal(response.content, image_bytes)


def test_a_plus_sent_as_a_space_in_the_offset_is_read_as_plus(client, stored):
    response = client.get(
        "/collections/images?deviceId=cam%2F1%20%C3%BC&timestamp=2024-08-18T04:04:07+02:00"
    )
    assert response.status_code == 200
    assert response["ETag"] == f'"{stored["sha256"]}"'


@pytest.mark.parametrize(
    ("query", "fields"),
    [
        ("", {"deviceId", "timestamp"}),
        ("deviceId=x", {"timestamp"}),
        (f"timestamp={TS}", {"deviceId"}),
        ("deviceId=x&timestamp=nope", {"timestamp"}),
        ("deviceId=%00&timestamp=2024-08-18T02:04:07Z", {"deviceId"}),
    ],
)
def test_missing_or_invalid_parameters_are_400(client, query, fields):
    response = client.get(f"/collections/images?{query}")
    assert response.status_code == 400
    assert set(response.json()["errors"]) == fields


def test_no_such_image_is_404(client, stored):
    response = client.get(by_query("nobody"))
    assert response.status_code == 404
    assert "detail" in response.json()["errors"]


def test_if_none_match_is_304(client, stored):
    response = client.get(by_query(), HTTP_IF_NONE_MATCH=f'"{stored["sha256"]}"')
    assert response.status_code == 304
    assert response.content == b""
    assert response["ETag"] == f'"{stored["sha256"]}"'


def test_a_stale_etag_gets_the_image(client, stored):
    response = client.get(by_query(), HTTP_IF_NONE_MATCH='"0000"')
    assert response.status_code == 200


def test_if_modified_since_is_304(client, stored):
    last_modified = client.get(by_query())["Last-Modified"]
    response = client.get(by_query(), HTTP_IF_MODIFIED_SINCE=last_modified)
    assert response.status_code == 304


def test_head_sends_headers_only(client, stored):
    response = client.head(by_query())
    assert response.status_code == 200
    assert response.content == b""
    assert int(response["Content-Length"]) == stored["storedSize"]
    assert response["Content-Type"] == "image/png"


def test_a_range_is_206_with_content_range(client, stored):
    full = client.get(by_query()).content
    response = client.get(by_query(), HTTP_RANGE="bytes=10-19")
    assert response.status_code == 206
    assert response.content == full[10:20]
    assert response["Content-Range"] == f"bytes 10-19/{len(full)}"
    suffix = client.get(by_query(), HTTP_RANGE="bytes=-5")
    assert suffix.status_code == 206
    assert suffix.content == full[-5:]
    open_ended = client.get(by_query(), HTTP_RANGE="bytes=5-")
    assert open_ended.content == full[5:]


def test_several_ranges_come_as_multipart(client, stored):
    full = client.get(by_query()).content
    response = client.get(by_query(), HTTP_RANGE="bytes=0-3,8-9")
    assert response.status_code == 206
    assert response["Content-Type"].startswith("multipart/byteranges; boundary=")
    assert full[0:4] in response.content
    assert f"Content-Range: bytes 8-9/{len(full)}".encode() in response.content


@pytest.mark.parametrize(
    "header", ["bytes=100000-", "bytes=" + ",".join(f"{i}-{i}" for i in range(1000))]
)
def test_an_unsatisfiable_range_is_416(client, stored, header):
    response = client.get(by_query(), HTTP_RANGE=header)
    assert response.status_code == 416
    assert response["Content-Range"] == f"bytes */{stored['storedSize']}"
    assert "detail" in response.json()["errors"]


def test_a_range_with_a_stale_if_range_gets_the_whole_image(client, stored):
    response = client.get(by_query(), HTTP_RANGE="bytes=0-9", HTTP_IF_RANGE='"stale"')
    assert response.status_code == 200
    assert len(response.content) == stored["storedSize"]


def test_the_location_serves_the_image_immutably(client, stored, image_bytes):
    response = client.get(stored["href"])
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert "immutable" in response["Cache-Control"]
    assert "Accept" in response["Vary"]
    assert pixels_equal(response.content, image_bytes)
    assert client.get(stored["href"], HTTP_IF_NONE_MATCH=response["ETag"]).status_code == 304


def test_the_location_gives_metadata_when_accept_prefers_it(client, stored):
    as_json = client.get(stored["href"], HTTP_ACCEPT="application/json")
    assert as_json["Content-Type"] == "application/json"
    assert as_json.json() == stored
    as_cbor = client.get(stored["href"], HTTP_ACCEPT="application/cbor")
    assert cbor2.loads(as_cbor.content) == stored
    as_link = client.get(stored["href"], HTTP_ACCEPT="application/link-format")
    (link,) = parse(as_link.content.decode())
    assert link.href == stored["href"]
    assert dict(link.attrs) == {"ct": "23", "sz": str(stored["storedSize"]), "title": TS}
    wildcard = client.get(stored["href"], HTTP_ACCEPT="application/json, */*;q=0.5")
    assert wildcard["Content-Type"] == "application/json"


@pytest.mark.parametrize("accept", ["*/*", "image/*", "image/png, application/json", "image/png"])
def test_the_location_gives_the_image_when_accept_does_not_prefer_metadata(client, stored, accept):
    response = client.get(stored["href"], HTTP_ACCEPT=accept)
    assert response["Content-Type"] == "image/png"


def test_an_accept_that_admits_neither_is_406(client, stored):
    response = client.get(stored["href"], HTTP_ACCEPT="text/html")
    assert response.status_code == 406


def test_delete_is_204_then_404(client, stored):
    assert client.delete(stored["href"]).status_code == 204
    assert client.get(stored["href"]).status_code == 404
    assert client.delete(stored["href"]).status_code == 404
    assert client.get(by_query()).status_code == 404
    assert Image.objects.count() == 0


def test_an_unknown_id_or_path_is_404_in_the_error_format(client):
    for url in [
        "/collections/images/00000000-0000-0000-0000-000000000000",
        "/collections/images/xyz",
        "/nope",
    ]:
        response = client.get(url)
        assert response.status_code == 404, url
        assert response["Content-Type"] == "application/json"
        assert "detail" in response.json()["errors"]


def test_a_lookup_is_one_query(client, stored, django_assert_num_queries):
    with django_assert_num_queries(1):
        assert client.get(by_query()).status_code == 200


def test_a_lookup_uses_the_unique_index(stored):
    queryset = Image.objects.filter(device_id="cam/1 ü", timestamp="2024-08-18T02:04:07Z")
    plan = queryset.explain()
    if connection.vendor == "sqlite":
        assert "USING INDEX" in plan
    else:
        assert "Index" in plan
