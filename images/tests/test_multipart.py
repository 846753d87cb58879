"""API.md §16: multipart/form-data uploads (RFC 7578), as IP cameras and ESP32 firmware send them.

The same flow as every other body (API.md §2): the test client's real
multipart bodies first, then httpx and curl's ``-F`` against a live server.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import subprocess

import cbor2
import httpx
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from conftest import METADATA_KEYS, ROOT, png_bytes
from images.compression import pixels_equal
from images.models import Image, Token
from images.tokens import token_issue

pytestmark = pytest.mark.django_db

URL = "/collections/images"
TS = "2024-08-18T02:04:07Z"
JPEG = ROOT / "testdata" / "sklearn__china.jpg"
PNG = ROOT / "testdata" / "skimage__brick.png"


def part(data: bytes, name: str = "photo.png", content_type: str = "image/png"):
    return SimpleUploadedFile(name, data, content_type=content_type)


def post_form(client, form: dict, *, query: str = "", **extra):
    """A multipart/form-data POST, encoded by Django's test client."""
    return client.post(f"{URL}{query}", form, **extra)


def errors_of(response) -> dict:
    assert response["Content-Type"] == "application/json"
    return response.json()["errors"]


def stored(meta: dict) -> bytes:
    return bytes(Image.objects.get(id=meta["id"]).data)


# --- Through the test client (real multipart bodies, real database) -------------------


def test_a_form_upload_is_201_with_location_and_metadata(client, png):
    response = post_form(client, {"deviceId": "cam-1", "timestamp": TS, "imageData": part(png)})
    assert response.status_code == 201
    assert response["Content-Type"] == "application/json"
    meta = response.json()
    assert set(meta) == METADATA_KEYS
    assert response["Location"] == meta["href"]
    assert (meta["deviceId"], meta["timestamp"], meta["contentType"]) == ("cam-1", TS, "image/png")
    assert meta["originalSize"] == len(png)
    assert pixels_equal(stored(meta), png)


def test_the_key_may_come_in_the_query_as_for_a_raw_upload(client, png):
    response = post_form(
        client,
        {"imageData": part(png)},
        query="?deviceId=cam-1&timestamp=2024-08-18T04:04:07 02:00",
    )
    assert response.status_code == 201
    assert response.json()["timestamp"] == TS  # "+" arrived as a space, as in any query


def test_each_key_field_comes_from_the_form_else_the_query(client, png):
    query = f"?deviceId=from-query&timestamp={TS}"
    response = post_form(client, {"deviceId": "from-form", "imageData": part(png)}, query=query)
    assert response.status_code == 201
    assert (response.json()["deviceId"], response.json()["timestamp"]) == ("from-form", TS)


def test_a_space_in_a_form_timestamp_is_not_a_plus(client, png):
    form = {"deviceId": "cam-1", "timestamp": "2024-08-18T04:04:07 02:00", "imageData": part(png)}
    response = post_form(client, form)
    assert response.status_code == 400
    assert list(errors_of(response)) == ["timestamp"]


@pytest.mark.parametrize("name", ["image", "file", "upload"])
def test_the_image_may_be_named_image_or_be_the_only_file(client, png, name):
    response = post_form(client, {"deviceId": "cam-1", "timestamp": TS, name: part(png)})
    assert response.status_code == 201
    assert pixels_equal(stored(response.json()), png)


def test_image_data_is_chosen_among_several_files(client, png):
    form = {
        "deviceId": "cam-1",
        "timestamp": TS,
        "log": part(b"boot ok\n", "log.txt", "text/plain"),
        "image": part(png_bytes(seed=1)),
        "imageData": part(png),
    }
    response = post_form(client, form)
    assert response.status_code == 201
    assert pixels_equal(stored(response.json()), png)


def test_two_files_neither_named_image_data_nor_image_are_400_naming_both(client, png):
    form = {"deviceId": "cam-1", "timestamp": TS, "front": part(png), "back": part(png)}
    response = post_form(client, form)
    assert response.status_code == 400
    [message] = errors_of(response)["imageData"]
    assert "back, front" in message
    assert not Image.objects.exists()


def test_two_files_of_the_same_name_are_400(client, png):
    form = {"deviceId": "cam-1", "timestamp": TS, "imageData": [part(png), part(png)]}
    response = post_form(client, form)
    assert response.status_code == 400
    assert errors_of(response)["imageData"] == ["one file part named imageData, not 2"]


def test_missing_fields_are_400_each_named(client):
    response = post_form(client, {"note": "no image here"})
    assert response.status_code == 400
    assert set(errors_of(response)) == {"deviceId", "timestamp", "imageData"}
    assert "file part named imageData" in errors_of(response)["imageData"][0]


def test_a_form_without_parts_is_400_naming_each_field(client):
    response = client.post(URL, b"--x--\r\n", content_type="multipart/form-data; boundary=x")
    assert response.status_code == 400
    assert set(errors_of(response)) == {"deviceId", "timestamp", "imageData"}


def test_image_data_as_a_text_field_is_400_asking_for_a_file_part(client):
    form = {"deviceId": "cam-1", "timestamp": TS, "imageData": "iVBORw0KGgo="}
    response = post_form(client, form)
    assert response.status_code == 400
    [message] = errors_of(response)["imageData"]
    assert "must be a file part" in message


def test_a_file_that_is_not_an_image_is_400_naming_image_data(client):
    form = {"deviceId": "cam-1", "timestamp": TS, "imageData": part(b"not an image at all")}
    response = post_form(client, form)
    assert response.status_code == 400
    assert list(errors_of(response)) == ["imageData"]


@pytest.mark.parametrize(
    "content_type", ["multipart/form-data", "multipart/form-data; boundary=\x7fbad"]
)
def test_a_form_without_a_usable_boundary_is_400(client, content_type):
    response = client.post(
        f"{URL}?deviceId=d&timestamp={TS}", b"--x\r\n", content_type=content_type
    )
    assert response.status_code == 400
    assert list(errors_of(response)) == ["detail"]


def test_a_body_over_the_limit_is_413_from_content_length(client, settings):
    settings.IMAGES_MAX_BYTES = 1000
    big = os.urandom(70 * 1024)  # more than the image limit plus 64 KiB
    response = post_form(client, {"deviceId": "cam-1", "timestamp": TS, "imageData": part(big)})
    assert response.status_code == 413
    assert "limit of 66536 for multipart/form-data" in errors_of(response)["detail"][0]


def test_an_image_over_the_byte_limit_is_413(client, settings):
    image = png_bytes(size=(50, 50))
    settings.IMAGES_MAX_BYTES = len(image) - 1
    response = post_form(client, {"deviceId": "cam-1", "timestamp": TS, "imageData": part(image)})
    assert response.status_code == 413
    assert list(errors_of(response)) == ["imageData"]


def test_more_pixels_than_the_limit_is_413_before_decoding(client, settings):
    settings.IMAGES_MAX_PIXELS = 100 * 100
    image = png_bytes(size=(101, 100))
    response = post_form(client, {"deviceId": "cam-1", "timestamp": TS, "imageData": part(image)})
    assert response.status_code == 413


def test_an_identical_retry_is_200_and_another_image_is_409(client, png):
    form = {"deviceId": "cam-1", "timestamp": TS}
    first = post_form(client, {**form, "imageData": part(png)})
    again = post_form(client, {**form, "imageData": part(png, "retry.png")})
    other = post_form(client, {**form, "imageData": part(png_bytes(seed=9))})
    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 409)
    assert again.json() == first.json()
    assert Image.objects.count() == 1
    assert pixels_equal(stored(first.json()), png)


def test_a_form_and_a_json_upload_of_the_same_image_are_one_image(client, png):
    body = {"deviceId": "cam-1", "timestamp": TS, "imageData": base64.b64encode(png).decode()}
    assert client.post(URL, body, content_type="application/json").status_code == 201
    response = post_form(client, {"deviceId": "cam-1", "timestamp": TS, "imageData": part(png)})
    assert response.status_code == 200


def test_accept_decides_the_answer_format(client, png):
    form = {"deviceId": "cam-1", "timestamp": TS, "imageData": part(png)}
    response = post_form(client, form, HTTP_ACCEPT="application/cbor")
    assert response.status_code == 201
    assert cbor2.loads(response.content)["deviceId"] == "cam-1"


def test_a_large_image_is_read_from_its_temporary_file_which_is_then_deleted(
    client, settings, tmp_path
):
    """Past FILE_UPLOAD_MAX_MEMORY_SIZE a part goes to disk as it arrives; it is read there."""
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1000
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path)
    image = PNG.read_bytes()
    response = post_form(client, {"deviceId": "cam-1", "timestamp": TS, "imageData": part(image)})
    assert response.status_code == 201
    assert pixels_equal(stored(response.json()), image)
    assert list(tmp_path.iterdir()) == []


# --- Token mode (API.md §6): the device token of the form's deviceId -------------------


def bearer(device: str) -> dict[str, str]:
    _, raw = token_issue(kind=Token.Kind.DEVICE, subject=device)
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


@pytest.mark.parametrize(("who", "status"), [(None, 401), ("cam-2", 403), ("cam-1", 201)])
def test_a_form_upload_needs_the_device_token_of_its_device_id(client, settings, png, who, status):
    settings.IMAGES_AUTH = "token"
    headers = bearer(who) if who else {}
    form = {"deviceId": "cam-1", "timestamp": TS, "imageData": part(png)}
    response = post_form(client, form, **headers)
    assert response.status_code == status
    assert Image.objects.exists() == (status == 201)


def test_a_query_device_id_is_judged_as_the_forms_would_be(client, settings, png):
    settings.IMAGES_AUTH = "token"
    response = post_form(
        client, {"imageData": part(png)}, query=f"?deviceId=cam-1&timestamp={TS}", **bearer("cam-2")
    )
    assert response.status_code == 403


# --- Against a live server: real sockets, httpx, curl -F -----------------------------------


def fresh_device() -> str:
    return f"esp32-{os.urandom(4).hex()}"


def download(server, href: str) -> bytes:
    response = httpx.get(server.url + href, timeout=30)
    assert response.status_code == 200
    return response.content


def test_httpx_sends_a_jpeg_that_comes_back_bit_for_bit(live_server_process):
    jpeg = JPEG.read_bytes()
    device = fresh_device()
    response = httpx.post(
        live_server_process.url + URL,
        data={"deviceId": device, "timestamp": TS},
        files={"imageData": ("capture.jpg", jpeg, "image/jpeg")},
        timeout=60,
    )
    assert response.status_code == 201, response.text
    meta = response.json()
    assert (meta["deviceId"], meta["contentType"]) == (device, "image/jpeg")
    sent = hashlib.sha256(jpeg).hexdigest()
    assert hashlib.sha256(download(live_server_process, meta["href"])).hexdigest() == sent
    retry = httpx.post(
        live_server_process.url + URL,
        data={"deviceId": device, "timestamp": TS},
        files={"imageData": ("capture.jpg", jpeg, "image/jpeg")},
        timeout=60,
    )
    assert (retry.status_code, retry.json()) == (200, meta)


def curl(*args: str) -> tuple[int, bytes]:
    """curl's status code and body."""
    done = subprocess.run(
        ["/usr/bin/curl", "--silent", "--show-error", "--write-out", "\n%{http_code}", *args],
        capture_output=True,
        timeout=60,
        check=True,
    )
    body, _, status = done.stdout.rpartition(b"\n")
    return int(status), body


def test_curl_dash_f_uploads_a_jpeg_and_a_png(live_server_process):
    device = fresh_device()
    url = live_server_process.url + URL
    status, body = curl(
        "-F", f"deviceId={device}", "-F", f"timestamp={TS}", "-F", f"imageData=@{JPEG}", url
    )
    assert status == 201, body
    meta = json.loads(body)
    downloaded = download(live_server_process, meta["href"])
    assert hashlib.sha256(downloaded).hexdigest() == hashlib.sha256(JPEG.read_bytes()).hexdigest()

    later = "2024-08-18T02:05:07Z"
    status, body = curl(
        "-F", f"image=@{PNG};type=image/png", f"{url}?deviceId={device}&timestamp={later}"
    )
    assert status == 201, body
    meta = json.loads(body)
    assert (meta["contentType"], meta["timestamp"]) == ("image/png", later)
    assert pixels_equal(download(live_server_process, meta["href"]), PNG.read_bytes())

    status, body = curl(
        "-F", f"deviceId={device}", "-F", f"timestamp={TS}", "-F", f"imageData=@{PNG}", url
    )
    assert status == 409, body


def send_raw(port: int, head: bytes, body: bytes = b"", *, half_close: bool = False) -> bytes:
    """What the server answers to these bytes (the body possibly shorter than announced)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + body)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        while not (b"\r\n\r\n" in answer and answer.rstrip().endswith(b"}")):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer


def test_an_oversized_form_is_413_before_its_body_is_sent(live_server_process):
    head = (
        f"POST {URL} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 999999999\r\n\r\n"
    ).encode()
    answer = send_raw(live_server_process.port, head)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"multipart/form-data" in answer


def test_a_form_that_ends_before_its_content_length_is_400_and_stores_nothing(
    live_server_process,
):
    device = fresh_device()
    jpeg = JPEG.read_bytes()
    body = (
        b'--b\r\nContent-Disposition: form-data; name="imageData"; filename="a.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + jpeg + b"\r\n--b--\r\n"
    )
    head = (
        f"POST {URL}?deviceId={device}&timestamp={TS} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    answer = send_raw(live_server_process.port, head, body[: len(body) // 2], half_close=True)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:300]
    assert b"ended after" in answer
    rows = live_server_process.query(
        "SELECT count(*) FROM images_image WHERE device_id = ?", (device,)
    )
    assert rows == [(0,)]


def test_the_stored_timestamp_is_the_forms(live_server_process):
    device = fresh_device()
    response = httpx.post(
        live_server_process.url + URL,
        data={"deviceId": device, "timestamp": "2024-08-18T04:04:07+02:00"},
        files={"image": ("p.png", PNG.read_bytes(), "image/png")},
        timeout=60,
    )
    assert response.status_code == 201
    assert response.json()["timestamp"] == TS
