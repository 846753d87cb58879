"""API.md §2: uploads over HTTP (Django's test client, real database)."""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime, timedelta, timezone

import cbor2
import pytest
from PIL import Image as PILImage

from conftest import METADATA_KEYS, png_bytes
from images.compression import pixels_equal
from images.models import Image

pytestmark = pytest.mark.django_db

URL = "/collections/images"
TS = "2024-08-18T02:04:07Z"


def post_json(client, body, **extra):
    return client.post(URL, json.dumps(body), content_type="application/json", **extra)


def post_cbor(client, body, **extra):
    return client.post(URL, cbor2.dumps(body), content_type="application/cbor", **extra)


def upload_body(image: bytes, device: str = "dev-1", timestamp: str = TS) -> dict:
    return {
        "deviceId": device,
        "timestamp": timestamp,
        "imageData": base64.b64encode(image).decode(),
    }


def errors_of(response) -> dict:
    if response["Content-Type"] == "application/cbor":
        return cbor2.loads(response.content)["errors"]
    assert response["Content-Type"] == "application/json"
    return response.json()["errors"]


def test_a_json_upload_is_201_with_location_and_metadata(client, png):
    response = post_json(client, upload_body(png))
    assert response.status_code == 201
    assert response["Content-Type"] == "application/json"
    meta = response.json()
    assert set(meta) == METADATA_KEYS
    assert response["Location"] == meta["href"] == f"/collections/images/{meta['id']}"
    assert meta["deviceId"] == "dev-1"
    assert meta["timestamp"] == TS
    assert (meta["contentType"], meta["width"], meta["height"]) == ("image/png", 20, 20)
    assert meta["originalSize"] == len(png)
    assert meta["storedSize"] <= meta["originalSize"]
    assert meta["receivedAt"].endswith("Z")
    stored = Image.objects.get(id=meta["id"])
    assert pixels_equal(bytes(stored.data), png)


def test_a_raw_cbor_upload_with_a_byte_string_answers_in_cbor(client, png):
    response = post_cbor(client, {"deviceId": "dev-1", "timestamp": TS, "imageData": png})
    assert response.status_code == 201
    assert response["Content-Type"] == "application/cbor"
    meta = cbor2.loads(response.content)
    assert set(meta) == METADATA_KEYS
    assert meta["deviceId"] == "dev-1"


def test_a_raw_cbor_upload_with_base64_text_is_accepted(client, png):
    response = post_cbor(client, upload_body(png))
    assert response.status_code == 201


def test_hex_text_cbor_is_detected_and_accepted(client, png):
    body = cbor2.dumps(upload_body(png)).hex()
    response = client.post(URL, body, content_type="application/cbor; charset=utf-8")
    assert response.status_code == 201
    assert cbor2.loads(response.content)["deviceId"] == "dev-1"


def test_a_raw_image_body_takes_its_key_from_the_query(client, png):
    response = client.post(
        f"{URL}?deviceId=cam%201&timestamp=2024-08-18T04:04:07%2B02:00",
        png,
        content_type="image/png",
    )
    assert response.status_code == 201
    assert response["Content-Type"] == "application/json"
    meta = response.json()
    assert (meta["deviceId"], meta["timestamp"]) == ("cam 1", TS)


def test_a_raw_upload_reads_a_plus_that_arrived_as_a_space(client, png):
    response = client.post(
        f"{URL}?deviceId=d&timestamp=2024-08-18T04:04:07+02:00", png, content_type="image/png"
    )
    assert response.status_code == 201
    assert response.json()["timestamp"] == TS


def test_accept_decides_the_answer_format(client, png):
    response = post_json(client, upload_body(png), HTTP_ACCEPT="application/cbor")
    assert response["Content-Type"] == "application/cbor"
    response = post_cbor(client, upload_body(png, "other"), HTTP_ACCEPT="application/json")
    assert response["Content-Type"] == "application/json"


def test_an_identical_retry_is_200_with_the_same_metadata_and_no_second_row(client, png):
    first = post_json(client, upload_body(png))
    again = post_cbor(client, upload_body(png), HTTP_ACCEPT="application/json")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert again["Location"] == first["Location"]
    assert Image.objects.count() == 1


def test_the_same_instant_with_another_offset_is_the_same_image(client, png):
    first = post_json(client, upload_body(png, timestamp="2024-08-18T02:04:07Z"))
    again = post_json(client, upload_body(png, timestamp="2024-08-18T07:34:07+05:30"))
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]


def test_a_different_image_at_the_same_key_is_409_and_leaves_the_stored_one(client, png):
    first = post_json(client, upload_body(png)).json()
    before = bytes(Image.objects.get(id=first["id"]).data)
    response = post_json(client, upload_body(png_bytes(seed=9)))
    assert response.status_code == 409
    assert "timestamp" in errors_of(response)
    assert Image.objects.count() == 1
    assert bytes(Image.objects.get(id=first["id"]).data) == before


@pytest.mark.parametrize("device", [12345, "x" * 100, "ünïcødé ✓", "a/b"])
def test_valid_device_ids_are_accepted(client, png, device):
    response = post_json(client, upload_body(png, device=device))
    assert response.status_code == 201
    assert response.json()["deviceId"] == str(device)


@pytest.mark.parametrize(
    "device", [1.5, True, None, [], {}, "", "x" * 101, "a\x00b", "a\x7fb", "a\x85b"]
)
def test_invalid_device_ids_are_400_naming_the_field(client, png, device):
    response = post_json(client, upload_body(png, device=device))
    assert response.status_code == 400
    assert list(errors_of(response)) == ["deviceId"]


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("2024-08-18T02:04:07Z", "2024-08-18T02:04:07Z"),
        ("2024-08-18t02:04:07z", "2024-08-18T02:04:07Z"),
        ("2024-08-18 02:04:07Z", "2024-08-18T02:04:07Z"),
        ("2024-08-18T02:04:07", "2024-08-18T02:04:07Z"),
        ("2024-08-18T02:04:07.5Z", "2024-08-18T02:04:07.500000Z"),
        ("2024-08-18T02:04:07.123456-01:00", "2024-08-18T03:04:07.123456Z"),
        ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"),
        ("9999-12-31T23:59:59Z", "9999-12-31T23:59:59Z"),
    ],
)
def test_timestamps_are_stored_in_utc(client, png, sent, stored):
    response = post_json(client, upload_body(png, timestamp=sent))
    assert response.status_code == 201
    assert response.json()["timestamp"] == stored


@pytest.mark.parametrize(
    "timestamp",
    [
        "2024-08-18T02:04:07.1234567Z",
        "0000-01-01T00:00:00Z",
        "10000-01-01T00:00:00Z",
        "2024-13-01T00:00:00Z",
        "2024-08-18",
        "yesterday",
        "2024-08-18T02:04Z",
        "0001-01-01T00:00:00+01:00",
        1723946647,
        None,
    ],
)
def test_invalid_timestamps_are_400(client, png, timestamp):
    response = post_json(client, upload_body(png, timestamp=timestamp))
    assert response.status_code == 400
    assert list(errors_of(response)) == ["timestamp"]


def _b64_variants(data: bytes) -> list[str]:
    standard = base64.b64encode(data).decode()
    return [
        standard,
        standard.rstrip("="),
        base64.urlsafe_b64encode(data).decode().rstrip("="),
        "\n".join(standard[i : i + 76] for i in range(0, len(standard), 76)),
        "data:image/png;base64," + standard,
    ]


@pytest.mark.parametrize("variant", range(5))
def test_base64_variants_are_tolerated(client, variant):
    image = png_bytes(size=(40, 40), seed=3)
    body = upload_body(image, device=f"b64-{variant}")
    body["imageData"] = _b64_variants(image)[variant]
    response = post_json(client, body)
    assert response.status_code == 201


@pytest.mark.parametrize("data", ["not base64!", "abcde", "ŝ", 42, None])
def test_bad_image_data_is_400(client, data):
    response = post_json(client, {"deviceId": "d", "timestamp": TS, "imageData": data})
    assert response.status_code == 400
    assert list(errors_of(response)) == ["imageData"]


def test_bytes_that_are_not_an_image_are_400_naming_image_data(client):
    response = post_json(client, upload_body(b"<html><script>alert(1)</script></html>"))
    assert response.status_code == 400
    assert "imageData" in errors_of(response)


def test_a_truncated_image_is_400(client):
    image = png_bytes(size=(64, 64))
    response = post_json(client, upload_body(image[: len(image) // 2]))
    assert response.status_code == 400
    assert "imageData" in errors_of(response)


def test_missing_fields_are_400_each_named(client):
    response = post_json(client, {"deviceId": "d"})
    assert response.status_code == 400
    assert set(errors_of(response)) == {"timestamp", "imageData"}


def test_unknown_keys_are_ignored(client, png):
    body = {**upload_body(png), "extra": {"nested": [1, 2]}}
    assert post_json(client, body).status_code == 201


@pytest.mark.parametrize("body", [[1, 2], "text", 5])
def test_a_body_that_is_not_an_object_is_400(client, body):
    response = post_json(client, body)
    assert response.status_code == 400
    assert "detail" in errors_of(response)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"deviceId": ', "application/json"),
        (b"\xff\xfe", "application/json"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json"),
        (b"\xa3\x61", "application/cbor"),
        (b"abc", "application/cbor"),
        (b"\x81" * 100_000, "application/cbor"),
        (b"\x5b\x00\x00\x00\x10\x00\x00\x00\x00ab", "application/cbor"),
        (b"\xa0\x00", "application/cbor"),
    ],
)
def test_malformed_bodies_are_400_never_500(client, body, content_type):
    response = client.post(URL, body, content_type=content_type)
    assert response.status_code == 400
    assert "detail" in errors_of(response)


def test_an_error_answers_in_cbor_to_a_cbor_request(client):
    response = client.post(URL, b"\xa3\x61", content_type="application/cbor")
    assert response["Content-Type"] == "application/cbor"
    assert "detail" in cbor2.loads(response.content)["errors"]


@pytest.mark.parametrize(
    "content_type", ["text/plain", "image/svg+xml", "multipart/mixed; boundary=x"]
)
def test_an_unsupported_content_type_is_415(client, png, content_type):
    response = client.post(f"{URL}?deviceId=d&timestamp={TS}", png, content_type=content_type)
    assert response.status_code == 415
    assert "detail" in errors_of(response)


def test_a_post_with_a_body_and_no_content_type_is_415(client, png):
    response = client.generic("POST", f"{URL}?deviceId=d&timestamp={TS}", png, content_type="")
    assert response.status_code == 415


def test_a_raw_upload_without_its_query_is_400(client, png):
    response = client.post(URL, png, content_type="image/png")
    assert response.status_code == 400
    assert set(errors_of(response)) == {"deviceId", "timestamp"}


def test_more_pixels_than_the_limit_is_413_before_decoding(client, settings):
    settings.IMAGES_MAX_PIXELS = 100 * 100
    image = png_bytes(size=(101, 100))
    response = post_json(client, upload_body(image))
    assert response.status_code == 413
    assert "imageData" in errors_of(response)


def test_an_image_over_the_byte_limit_is_413(client, settings):
    image = png_bytes(size=(50, 50))
    settings.IMAGES_MAX_BYTES = len(image) - 1
    response = client.post(f"{URL}?deviceId=d&timestamp={TS}", image, content_type="image/png")
    assert response.status_code == 413


def test_a_body_over_the_limit_is_413_from_content_length(client, settings):
    settings.IMAGES_MAX_BYTES = 1000
    response = client.post(URL, b"{" + b" " * 200_000 + b"}", content_type="application/json")
    assert response.status_code == 413
    assert "detail" in errors_of(response)


def test_an_animation_keeps_its_frames(client):
    frames = [PILImage.new("P", (16, 16), color=i) for i in range(3)]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=[100, 200, 300])
    response = post_json(client, upload_body(out.getvalue()))
    assert response.status_code == 201
    stored = Image.objects.get(id=response.json()["id"])
    assert stored.content_type == "image/gif"
    assert pixels_equal(bytes(stored.data), out.getvalue())


@pytest.mark.parametrize(
    "timestamp",
    [
        datetime(2024, 8, 18, 4, 4, 7, tzinfo=timezone(timedelta(hours=2))),  # tag 0 (text)
        datetime(2024, 8, 18, 2, 4, 7, tzinfo=UTC),
    ],
)
def test_cbor_date_time_tags_are_accepted(client, png, timestamp):
    body = {"deviceId": "tagged", "timestamp": timestamp, "imageData": png}
    response = post_cbor(client, body, HTTP_ACCEPT="application/json")
    assert response.status_code == 201
    assert response.json()["timestamp"] == TS


def test_a_cbor_epoch_tag_is_accepted(client, png):
    body = cbor2.dumps({"deviceId": "epoch", "imageData": png}).replace(b"\xa2", b"\xa3", 1)
    body += cbor2.dumps("timestamp") + b"\xc1" + cbor2.dumps(1723946647)  # tag 1: epoch seconds
    response = client.post(
        URL, body, content_type="application/cbor", HTTP_ACCEPT="application/json"
    )
    assert response.status_code == 201
    assert response.json()["timestamp"] == TS
