"""Deferred optimization: a fast pass on ingest, the full one by ``manage.py optimize``."""

from __future__ import annotations

import hashlib
import io

import pytest
from django.core.management import call_command
from PIL import Image as PILImage

from conftest import png_bytes
from images.compression import pixels_equal
from images.models import Image

pytestmark = pytest.mark.django_db

URL = "/collections/images?deviceId=opt&timestamp=2024-01-01T00:00:00Z"


@pytest.fixture(autouse=True)
def deferred(settings):
    settings.IMAGES_OPTIMIZE = "deferred"
    # The optimizer's own lossless paths; JPEG XL compaction: test_compaction.py.
    settings.IMAGES_COMPACT_JPEG = False


def jpeg_bytes() -> bytes:
    image = PILImage.open(io.BytesIO(png_bytes(size=(160, 120), seed=2))).convert("RGB")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90, optimize=False)
    return out.getvalue()


def upload(client, data: bytes, content_type: str):
    response = client.post(URL, data, content_type=content_type, HTTP_ACCEPT="application/json")
    assert response.status_code in (200, 201), response.content
    return response


def test_a_jpeg_is_stored_as_received_then_optimized_losslessly(client):
    sent = jpeg_bytes()
    meta = upload(client, sent, "image/jpeg").json()
    assert meta["storedSize"] == len(sent)
    first = client.get(meta["href"])
    assert first.content == sent
    assert "immutable" not in first["Cache-Control"]

    call_command("optimize", nice=0)

    image = Image.objects.get(id=meta["id"])
    assert image.optimized
    assert image.stored_size < len(sent)
    after = client.get(meta["href"])
    assert pixels_equal(after.content, sent)
    assert after["ETag"] != first["ETag"]
    assert "immutable" in after["Cache-Control"]
    assert client.get(meta["href"], HTTP_IF_NONE_MATCH=first["ETag"]).status_code == 200


def test_a_png_is_checked_at_once_and_optimized_later(client):
    sent = png_bytes(size=(300, 200), seed=3)
    meta = upload(client, sent, "image/png").json()
    assert meta["storedSize"] <= len(sent)
    call_command("optimize", nice=0)
    image = Image.objects.get(id=meta["id"])
    assert image.optimized
    assert image.stored_size <= meta["storedSize"]
    assert pixels_equal(bytes(image.data), sent)


def test_a_bmp_becomes_png_at_once(client):
    out = io.BytesIO()
    PILImage.open(io.BytesIO(png_bytes(size=(64, 64)))).save(out, "BMP")
    meta = upload(client, out.getvalue(), "image/bmp").json()
    assert meta["contentType"] == "image/png"


def test_a_retry_after_the_full_pass_is_still_recognised(client):
    sent = jpeg_bytes()
    first = upload(client, sent, "image/jpeg")
    call_command("optimize", nice=0)
    again = upload(client, sent, "image/jpeg")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]


def test_an_image_deleted_before_its_full_pass_is_skipped(client):
    meta = upload(client, jpeg_bytes(), "image/jpeg").json()
    assert client.delete(meta["href"]).status_code == 204
    call_command("optimize", nice=0)
    assert not Image.objects.exists()


def test_inline_mode_optimizes_before_answering(client, settings):
    settings.IMAGES_OPTIMIZE = "inline"
    sent = jpeg_bytes()
    meta = upload(client, sent, "image/jpeg").json()
    assert meta["storedSize"] < len(sent)
    assert Image.objects.get(id=meta["id"]).optimized


def test_a_large_png_is_stored_byte_for_byte_and_optimized_later(client):
    """Over 1 MiB: read in pieces, checked without a raster, written to SQLite in pieces."""
    import random

    side = 700
    noise = PILImage.frombytes("RGB", (side, side), random.Random(5).randbytes(side * side * 3))
    out = io.BytesIO()
    noise.save(out, "PNG", compress_level=1)
    sent = out.getvalue()
    assert len(sent) > 1 << 20
    meta = upload(client, sent, "image/png").json()
    download = client.get(meta["href"])
    assert download.streaming  # over 1 MiB: streamed in pieces, never held whole
    assert b"".join(download.streaming_content) == sent
    call_command("optimize", nice=0)
    assert pixels_equal(bytes(Image.objects.get(id=meta["id"]).data), sent)


@pytest.mark.parametrize("damage", ["cut", "flipped"])
def test_a_damaged_png_is_refused_before_anything_is_stored(client, damage):
    sent = bytearray(png_bytes(size=(300, 200), seed=4))
    idat = sent.index(b"IDAT")
    if damage == "cut":
        sent = sent[: idat + 200]
    else:
        sent[idat + 100] ^= 0xFF
    response = client.post(URL, bytes(sent), content_type="image/png")
    assert response.status_code == 400, response.content
    assert list(response.json()["errors"]) == ["imageData"]
    assert not Image.objects.exists()


# --- The bound on a background step (API.md §15) ------------------------------

SMALL_PNG = png_bytes(size=(300, 200), seed=6)  # RGB: 180,000 bytes decoded
SMALL_JPEG = jpeg_bytes()  # 160 x 120, three components: 57,600 bytes decoded


@pytest.mark.parametrize(
    ("sent", "content_type", "decoded"),
    [(SMALL_PNG, "image/png", 180_000), (SMALL_JPEG, "image/jpeg", 57_600)],
)
def test_an_image_over_the_decoded_bound_is_kept_as_received_and_says_why(
    client, settings, capsys, sent, content_type, decoded
):
    """As a 100 MP PNG under the default bound: checked at upload, never tried, served as sent."""
    settings.IMAGES_OPTIMIZE_MAX_PIXEL_BYTES = decoded - 1
    meta = upload(client, sent, content_type).json()
    first = client.get(meta["href"])

    call_command("optimize", nice=0)

    image = Image.objects.get(id=meta["id"])
    assert image.optimized  # final: it will not be tried again
    assert image.sha256 == hashlib.sha256(sent).hexdigest()
    served = client.get(meta["href"])
    assert served.content == sent
    assert served["ETag"] == first["ETag"]
    assert "immutable" in served["Cache-Control"]
    capsys.readouterr()
    call_command("optimize", status=True)
    status = capsys.readouterr().out
    assert f"{image.id}  opt  optimize: kept as received:" in status
    assert f"{decoded:,} bytes decoded; the bound is {decoded - 1:,}" in status
    assert "(IMAGES_OPTIMIZE_MAX_PIXEL_BYTES)" in status

    # Raised, the bound lets it through once it is queued again.
    settings.IMAGES_OPTIMIZE_MAX_PIXEL_BYTES = decoded
    call_command("optimize", retry=[str(image.id)])
    call_command("optimize", nice=0)
    image.refresh_from_db()
    assert (image.optimized, image.failure) == (True, "")
    assert image.stored_size < len(sent)
    assert pixels_equal(client.get(meta["href"]).content, sent)
