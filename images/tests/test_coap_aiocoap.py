"""API.md §5: CoAP against a live ``runcoap``, spoken to by aiocoap's client."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
from collections.abc import Iterator

import cbor2
import pytest
from aiocoap import GET, POST, Context, Message
from aiocoap.numbers.codes import Code
from PIL import Image as PILImage

from conftest import png_bytes
from formats.linkformat import parse
from images.compression import pixels_equal
from images.tests.conftest_coap import LiveCoap, start_runcoap

MAX_IMAGE_BYTES = 1_000_000
RAW_BODY_LIMIT = MAX_IMAGE_BYTES + 64 * 1024  # images.uploads.body_limit for a raw image
CONFLICT = Code(137)
ORIGINAL_LINK = b'</collections/images>;rt="simple.act";if="core.b"'


class Client:
    """aiocoap's client context on one event loop for the whole module."""

    def __init__(self, server: LiveCoap) -> None:
        self.server = server
        self._runner = asyncio.Runner()
        self._context = self._runner.run(Context.create_client_context())

    def request(
        self, code: Code, path: str, payload: bytes = b"", *, query: dict | None = None, **options
    ) -> Message:
        """One request; aiocoap does Block1 and Block2 itself unless told not to."""
        blockwise = options.pop("handle_blockwise", True)
        message = Message(code=code, uri=f"{self.server.uri}{path}", payload=payload, **options)
        if query is not None:
            message.opt.uri_query = [f"{name}={value}" for name, value in query.items()]
        return self._runner.run(self._response(message, blockwise))

    async def _response(self, message: Message, blockwise: bool) -> Message:
        return await self._context.request(message, handle_blockwise=blockwise).response

    def close(self) -> None:
        self._runner.run(self._context.shutdown())
        self._runner.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCoap]:
    live = start_runcoap(
        tmp_path_factory.mktemp("runcoap"), {"IMAGES_MAX_BYTES": str(MAX_IMAGE_BYTES)}
    )
    yield live
    live.stop()


@pytest.fixture(scope="module")
def coap(server: LiveCoap) -> Iterator[Client]:
    client = Client(server)
    yield client
    client.close()


def noise_png(side: int) -> bytes:
    """An incompressible PNG of about ``3 * side**2`` bytes."""
    image = PILImage.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def rows_for(server: LiveCoap, device: str) -> int:
    return server.query("SELECT COUNT(*) FROM images_image WHERE device_id = ?", (device,))[0][0]


def raw_upload(coap: Client, image: bytes, device: str, timestamp: str, **options) -> Message:
    query = {"deviceId": device, "timestamp": timestamp}
    return coap.request(
        POST, "/collections/images", image, query=query, content_format=23, **options
    )


# --- Discovery (API.md §1, §5) ------------------------------------------------


@pytest.mark.parametrize("path", ["/.well-known/core", "/collections"])
def test_discovery_answers_2_05_link_format_whose_first_link_is_the_original(coap, path):
    response = coap.request(GET, path)
    assert response.code == Code.CONTENT
    assert response.opt.content_format == 40
    assert response.payload.split(b",")[0] == ORIGINAL_LINK
    assert parse(response.payload.decode())[0].href == "/collections/images"


def test_collections_lists_only_links_under_collections(coap):
    links = parse(coap.request(GET, "/collections").payload.decode())
    assert all(link.href.startswith("/collections/") for link in links)


@pytest.mark.parametrize(
    "filters",
    [["rt=simple.act"], ["rt=simple*"], ["href=/collections*"], ["rt=simple.act", "if=core.b"]],
)
def test_matching_filters_keep_the_images_link(coap, filters):
    response = coap.request(GET, "/.well-known/core", uri_query=filters)
    assert response.code == Code.CONTENT
    assert [link.href for link in parse(response.payload.decode())] == ["/collections/images"]


@pytest.mark.parametrize(
    "filters", [["rt=nothing"], ["rt=simple.act", "if=core.ll"], ["if=core.b", "rt=other*"]]
)
def test_filters_are_anded_and_no_match_is_2_05_with_an_empty_payload(coap, filters):
    response = coap.request(GET, "/.well-known/core", uri_query=filters)
    assert response.code == Code.CONTENT
    assert response.opt.content_format == 40
    assert response.payload == b""


@pytest.mark.parametrize("query", ["rt", "=simple.act", "rt=si*mple"])
def test_a_malformed_filter_is_4_00_with_a_diagnostic(coap, query):
    response = coap.request(GET, "/.well-known/core", uri_query=[query])
    assert response.code == Code.BAD_REQUEST
    assert b"filter" in response.payload


def test_every_advertised_link_is_served_over_coap(coap):
    for link in parse(coap.request(GET, "/.well-known/core").payload.decode()):
        assert coap.request(GET, link.href).code != Code.NOT_FOUND, link.href


def test_discovery_with_an_accept_other_than_link_format_is_4_06(coap):
    assert coap.request(GET, "/.well-known/core", accept=50).code == Code.NOT_ACCEPTABLE


# --- Upload (API.md §2, §5) ---------------------------------------------------


def test_a_raw_png_upload_is_2_01_with_location_path_and_cbor_metadata(coap):
    image = png_bytes(seed=1)
    response = raw_upload(coap, image, "raw-1", "2024-08-18T02:04:07Z")
    assert response.code == Code.CREATED
    assert response.opt.content_format == 60
    meta = cbor2.loads(response.payload)
    assert meta["deviceId"] == "raw-1"
    assert meta["timestamp"] == "2024-08-18T02:04:07Z"
    assert meta["contentType"] == "image/png"
    assert "/" + "/".join(response.opt.location_path) == meta["href"]
    assert response.opt.location_path[:2] == ("collections", "images")


def test_a_json_upload_answers_json_when_accept_asks_for_it(coap):
    body = {
        "deviceId": 12345,
        "timestamp": "2024-08-18T04:04:07+02:00",
        "imageData": base64.b64encode(png_bytes(seed=2)).decode(),
    }
    response = coap.request(
        POST, "/collections/images", json.dumps(body).encode(), content_format=50, accept=50
    )
    assert response.code == Code.CREATED
    assert response.opt.content_format == 50
    meta = json.loads(response.payload)
    assert (meta["deviceId"], meta["timestamp"]) == ("12345", "2024-08-18T02:04:07Z")


def test_a_cbor_upload_with_a_byte_string_image_is_2_01(coap):
    image = png_bytes(seed=3)
    body = cbor2.dumps(
        {"deviceId": "cbor-1", "timestamp": "2024-08-18T02:04:07Z", "imageData": image}
    )
    response = coap.request(POST, "/collections/images", body, content_format=60)
    assert response.code == Code.CREATED
    assert cbor2.loads(response.payload)["originalSize"] == len(image)


def test_a_retried_identical_upload_gets_the_same_2_01_and_is_stored_once(coap, server):
    image = noise_png(100)  # block-wise: about 30 KB
    first = raw_upload(coap, image, "retry-1", "2024-08-18T02:04:07Z")
    again = raw_upload(coap, image, "retry-1", "2024-08-18T02:04:07Z")
    assert first.code == again.code == Code.CREATED
    assert again.opt.location_path == first.opt.location_path
    assert cbor2.loads(again.payload) == cbor2.loads(first.payload)
    assert rows_for(server, "retry-1") == 1


def test_another_image_at_the_same_key_is_4_09_and_the_stored_one_is_untouched(coap):
    first = raw_upload(coap, png_bytes(seed=4), "conflict-1", "2024-08-18T02:04:07Z")
    other = raw_upload(coap, png_bytes(seed=5), "conflict-1", "2024-08-18T02:04:07Z")
    assert other.code == CONFLICT
    assert b"timestamp" in other.payload
    stored = coap.request(GET, "/" + "/".join(first.opt.location_path))
    assert pixels_equal(stored.payload, png_bytes(seed=4))


@pytest.mark.parametrize(
    ("content_format", "body", "query", "named"),
    [
        (23, png_bytes(), {"deviceId": "bad-1", "timestamp": "yesterday"}, b"timestamp"),
        (23, png_bytes(), {"timestamp": "2024-08-18T02:04:07Z"}, b"deviceId"),
        (
            23,
            b"not an image",
            {"deviceId": "bad-2", "timestamp": "2024-08-18T02:04:07Z"},
            b"imageData",
        ),
        (50, b'{"deviceId": "bad-3",', {}, b"JSON"),
        (60, b"\xa1\x61", {}, b"CBOR"),
        (50, b'{"deviceId": "bad-4", "timestamp": "2024-08-18T02:04:07Z"}', {}, b"imageData"),
    ],
)
def test_bad_input_is_4_00_with_a_diagnostic_naming_the_fault(
    coap, content_format, body, query, named
):
    response = coap.request(
        POST, "/collections/images", body, query=query, content_format=content_format
    )
    assert response.code == Code.BAD_REQUEST
    assert named in response.payload


@pytest.mark.parametrize("options", [{"content_format": 0}, {"content_format": 41}, {}])
def test_an_unsupported_or_missing_content_format_is_4_15(coap, options):
    response = coap.request(POST, "/collections/images", png_bytes(), **options)
    assert response.code == Code.UNSUPPORTED_CONTENT_FORMAT
    assert b"Content-Format" in response.payload


def test_it_answers_4_13_with_size1_for_a_too_large_block1_upload(coap):
    # aiocoap announces the whole size as Size1 with the first block (RFC 7959 §4).
    response = raw_upload(coap, os.urandom(RAW_BODY_LIMIT + 1), "big-1", "2024-08-18T02:04:07Z")
    assert response.code == Code.REQUEST_ENTITY_TOO_LARGE
    assert response.opt.size1 == RAW_BODY_LIMIT


def test_a_first_block_announcing_a_too_large_size1_gets_4_13_at_once(coap):
    response = raw_upload(
        coap,
        bytes(1024),
        "big-2",
        "2024-08-18T02:04:07Z",
        block1=(0, True, 6),
        size1=RAW_BODY_LIMIT + 1,
        handle_blockwise=False,
    )
    assert response.code == Code.REQUEST_ENTITY_TOO_LARGE
    assert response.opt.size1 == RAW_BODY_LIMIT


def test_a_block_that_does_not_continue_an_upload_is_4_08(coap):
    response = raw_upload(
        coap,
        bytes(1024),
        "gap-1",
        "2024-08-18T02:04:07Z",
        block1=(5, True, 6),
        handle_blockwise=False,
    )
    assert response.code == Code.REQUEST_ENTITY_INCOMPLETE


def test_an_upload_whose_accept_cannot_be_served_is_4_06(coap):
    response = raw_upload(coap, png_bytes(), "accept-1", "2024-08-18T02:04:07Z", accept=23)
    assert response.code == Code.NOT_ACCEPTABLE


# --- Download (API.md §3, §5) -------------------------------------------------


@pytest.fixture(scope="module")
def large(coap: Client) -> tuple[bytes, Message]:
    """A ~300 KB PNG uploaded block-wise, and the answer to its upload."""
    image = noise_png(320)
    response = raw_upload(coap, image, "large-1", "2024-08-18T02:04:07.5Z")
    assert response.code == Code.CREATED
    return image, response


def download(coap: Client, **options) -> Message:
    query = {"deviceId": "large-1", "timestamp": "2024-08-18T02:04:07.500000Z"}
    return coap.request(GET, "/collections/images", query=query, **options)


def test_a_large_image_downloads_block_wise_with_its_content_format_and_an_etag(coap, large):
    image, uploaded = large
    response = download(coap)
    assert response.code == Code.CONTENT
    assert response.opt.content_format == 23
    assert response.opt.etag == bytes.fromhex(cbor2.loads(uploaded.payload)["sha256"][:16])
    assert pixels_equal(response.payload, image)


def test_the_first_block_carries_block2_and_size2(coap, large):
    response = download(coap, block2=(0, False, 6), handle_blockwise=False)
    assert response.opt.block2.more
    assert len(response.payload) == 1024
    assert response.opt.size2 == cbor2.loads(large[1].payload)["storedSize"]


def test_a_request_with_the_current_etag_gets_2_03_valid(coap, large):
    etag = download(coap).opt.etag
    response = download(coap, etag=etag)
    assert response.code == Code.VALID
    assert response.opt.etag == etag
    assert response.payload == b""


def test_a_request_with_another_etag_gets_the_image(coap, large):
    assert download(coap, etag=b"\x00" * 8).code == Code.CONTENT


def test_an_accept_the_image_cannot_be_served_in_is_4_06(coap, large):
    assert download(coap, accept=22).code == Code.NOT_ACCEPTABLE


def test_accept_cbor_gets_the_metadata_instead(coap, large):
    response = download(coap, accept=60)
    assert response.code == Code.CONTENT
    assert response.opt.content_format == 60
    assert cbor2.loads(response.payload) == cbor2.loads(large[1].payload)


def test_the_location_path_serves_the_image(coap, large):
    image, uploaded = large
    response = coap.request(GET, "/" + "/".join(uploaded.opt.location_path))
    assert response.code == Code.CONTENT
    assert response.opt.content_format == 23
    assert pixels_equal(response.payload, image)


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/collections/images", {"deviceId": "nobody", "timestamp": "2024-08-18T02:04:07Z"}),
        ("/collections/images/00000000-0000-0000-0000-000000000000", {}),
        ("/collections/images/not-an-id", {}),
    ],
)
def test_an_image_that_does_not_exist_is_4_04_not_to_be_reused(coap, path, query):
    response = coap.request(GET, path, query=query)
    assert response.code == Code.NOT_FOUND
    assert response.opt.max_age == 0


def test_an_unknown_path_is_4_04(coap):
    assert coap.request(GET, "/nowhere").code == Code.NOT_FOUND


def test_a_download_without_its_key_is_4_00(coap):
    response = coap.request(GET, "/collections/images", query={"deviceId": "large-1"})
    assert response.code == Code.BAD_REQUEST
    assert b"timestamp" in response.payload


# --- Listings (API.md §4: reachable over CoAP too) ---------------------------


@pytest.fixture(scope="module")
def listed(coap: Client) -> str:
    device = "list/ed cam ü"
    for second in range(3):
        image = png_bytes(size=(8, 8), seed=40 + second)
        timestamp = f"2024-03-03T00:00:0{second}Z"
        assert raw_upload(coap, image, device, timestamp).code == Code.CREATED
    return device


def test_devices_lists_each_device_in_cbor_by_default(coap, listed):
    response = coap.request(GET, "/devices", query={"limit": 1000})
    assert response.code == Code.CONTENT
    assert response.opt.content_format == 60
    body = cbor2.loads(response.payload)
    (device,) = [item for item in body["items"] if item["deviceId"] == listed]
    assert device["imageCount"] == 3
    assert device["href"] == "/devices/list%2Fed%20cam%20%C3%BC/images"


def test_a_devices_images_page_in_json_follows_its_next_link(coap, listed):
    message = Message(code=GET, uri=f"{coap.server.uri}/devices", accept=50)
    message.opt.uri_path = ("devices", listed, "images")
    message.opt.uri_query = ("limit=2",)
    first = coap._runner.run(coap._response(message, True))
    assert first.code == Code.CONTENT
    page = json.loads(first.payload)
    assert [item["timestamp"] for item in page["items"]] == [
        "2024-03-03T00:00:00Z",
        "2024-03-03T00:00:01Z",
    ]
    query = page["next"].partition("?")[2]
    message.opt.uri_query = tuple(query.split("&"))
    rest = json.loads(coap._runner.run(coap._response(message, True)).payload)
    assert [item["timestamp"] for item in rest["items"]] == ["2024-03-03T00:00:02Z"]
    assert rest["next"] is None


def test_a_devices_images_in_link_format_carry_a_next_link(coap, listed):
    message = Message(code=GET, uri=f"{coap.server.uri}/devices", accept=40)
    message.opt.uri_path = ("devices", listed, "images")
    message.opt.uri_query = ("limit=2",)
    response = coap._runner.run(coap._response(message, True))
    links = parse(response.payload.decode())
    assert [dict(link.attrs).get("title") for link in links[:2]] == [
        "2024-03-03T00:00:00Z",
        "2024-03-03T00:00:01Z",
    ]
    assert dict(links[2].attrs)["rel"] == "next"


@pytest.mark.parametrize(
    ("path", "query", "code"),
    [
        (("devices", "nobody", "images"), (), Code.NOT_FOUND),
        (("devices", "x", "other"), (), Code.NOT_FOUND),
        (("devices",), ("limit=0",), Code.BAD_REQUEST),
        (("devices",), ("cursor=nonsense",), Code.BAD_REQUEST),
    ],
)
def test_bad_listing_requests_get_their_4_xx(coap, path, query, code):
    message = Message(code=GET, uri=f"{coap.server.uri}/devices")
    message.opt.uri_path = path
    message.opt.uri_query = query
    assert coap._runner.run(coap._response(message, True)).code == code
