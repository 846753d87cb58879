"""API.md §15 "Decoding costs are bounded before decoding": JPEG scans and multi-picture indexes.

A progressive JPEG is decoded in one pass over every pixel per scan, so a
small file repeating a scan thousands of times costs seconds of CPU per
decode; a multi-picture index may list thousands of pictures that Pillow
never counts as frames. Both are counted from the markers and refused
(``413``) before anything is decoded. The files are built here, by hand
around JPEGs Pillow writes.
"""

from __future__ import annotations

import io
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from images.compression import mpo
from images.compression.jpeg import jpeg_length, jpeg_scans

pytestmark = pytest.mark.django_db

URL = "/collections/images?deviceId=bounds&timestamp=2024-09-0{day}T00:00:00Z"


def photo_jpeg(*, progressive: bool = False) -> bytes:
    image = Image.linear_gradient("L").convert("RGB").resize((320, 240))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90, progressive=progressive)
    return out.getvalue()


def scan_bomb(repeats: int) -> bytes:
    """A progressive JPEG whose last scan is repeated ``repeats`` more times before its EOI."""
    data = photo_jpeg(progressive=True)
    last = data.rfind(b"\xff\xda")
    return data[:-2] + data[last:-2] * repeats + data[-2:]


def with_mp_index(jpeg: bytes, entries: int) -> bytes:
    """``jpeg`` with an APP2 MPF segment whose MP Index lists ``entries`` more pictures."""
    table = b"".join(
        struct.pack(">IIIHH", 0, 1000, 10_000 + index * 1000, 0, 0) for index in range(entries)
    )
    # One IFD entry (MP Entry, UNDEFINED, the table at offset 26), no next IFD.
    ifd = struct.pack(">H", 1) + struct.pack(">HHII", 0xB002, 7, len(table), 26) + bytes(4)
    payload = b"MPF\x00" + b"MM\x00*" + struct.pack(">I", 8) + ifd + table
    return jpeg[:2] + b"\xff\xe2" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def upload(client, data: bytes, day: int = 1):
    return client.post(URL.format(day=day), data, content_type="image/jpeg")


def test_a_real_progressive_jpeg_has_a_few_scans_and_is_taken(client):
    data = photo_jpeg(progressive=True)
    assert 1 < jpeg_scans(data) <= 15
    assert jpeg_scans(photo_jpeg()) == 1
    assert upload(client, data).status_code == 201


def test_a_jpeg_repeating_its_scans_is_refused_before_it_is_decoded(client):
    bomb = scan_bomb(200)
    assert jpeg_scans(bomb) > 100
    response = upload(client, bomb)
    assert response.status_code == 413
    assert "scans" in response.json()["errors"]["imageData"][0]


def test_the_operator_sets_the_scan_limit(client, settings):
    settings.IMAGES_MAX_JPEG_SCANS = 5
    assert upload(client, photo_jpeg(progressive=True)).status_code == 413
    settings.IMAGES_MAX_JPEG_SCANS = 300
    assert upload(client, scan_bomb(200), day=2).status_code == 201


def test_a_multi_picture_index_longer_than_the_frame_limit_is_refused(client):
    data = with_mp_index(photo_jpeg(), 1_001)
    assert mpo.indexed_pictures(data) == 1_002
    response = upload(client, data)
    assert response.status_code == 413
    assert "multi-picture index" in response.json()["errors"]["imageData"][0]
    # A short index of pictures that are not there is no bomb: stored as received.
    assert upload(client, with_mp_index(photo_jpeg(), 3), day=2).status_code == 201


def test_an_image_stored_under_a_higher_limit_gets_no_thumbnail_but_still_downloads(
    client, settings
):
    """The limits bound every decode, not only uploads: a thumbnail of an image stored
    before the limit was lowered is refused (422) before anything is decoded."""
    settings.IMAGES_MAX_JPEG_SCANS = 300
    bomb = scan_bomb(200)
    stored = upload(client, bomb)
    assert stored.status_code == 201
    href = stored.json()["href"]
    settings.IMAGES_MAX_JPEG_SCANS = 100
    refused = client.get(f"{href}/thumbnail?size=64", HTTP_ACCEPT="image/jpeg")
    assert refused.status_code == 422
    assert "scans" in refused.json()["errors"]["detail"][0]
    assert client.get(href, HTTP_ACCEPT="image/jpeg").content == bomb  # served as it is
    settings.IMAGES_MAX_JPEG_SCANS = 300
    made = client.get(f"{href}/thumbnail?size=64", HTTP_ACCEPT="image/jpeg")
    assert made.status_code == 200
    assert made["Content-Type"] == "image/jpeg"


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096), st.integers(0, 4))
def test_the_marker_walkers_take_any_bytes(tail: bytes, cut: int) -> None:
    """For every input: an answer, no exception, within the deadline (hypothesis times it)."""
    for data in (b"\xff\xd8" + tail, photo_jpeg()[: 200 * cut] + tail):
        scans = jpeg_scans(data)
        length = jpeg_length(data)
        assert scans >= 0
        assert length is None or 2 <= length <= len(data)
        assert mpo.indexed_pictures(data) >= 1
        for start, end in mpo.pictures(data):
            assert 0 <= start < end <= len(data)
