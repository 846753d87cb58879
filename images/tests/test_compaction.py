"""API.md §12 and §14 through the service: JPEG and MPO final at once, held as JPEG XL later.

The upload's own bytes are served from its first answer (``optimized``, the
ETag final); compacting happens in the background (``optimize``, or
``serve``'s and ``runserver``'s workers) and changes only ``atRestSize``.
"""

from __future__ import annotations

import hashlib
import io

import pytest
from django.core.management import call_command
from PIL import Image as PILImage

from conftest import ROOT, png_bytes
from images.models import Image

pytestmark = pytest.mark.django_db

CHINA = (ROOT / "testdata" / "sklearn__china.jpg").read_bytes()
URL = "/collections/images?deviceId=cam&timestamp=2024-10-0{day}T00:00:00Z"


def upload(client, data: bytes, day: int = 1, content_type: str = "image/jpeg") -> dict:
    response = client.post(URL.format(day=day), data, content_type=content_type)
    assert response.status_code == 201, response.content
    return response.json()


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def mpo_bytes() -> bytes:
    first = PILImage.open(io.BytesIO(png_bytes(size=(320, 240), seed=1))).convert("RGB")
    second = PILImage.open(io.BytesIO(png_bytes(size=(320, 240), seed=2))).convert("RGB")
    out = io.BytesIO()
    first.save(out, "MPO", save_all=True, append_images=[second], quality=92)
    return out.getvalue()


def compacted(client, meta: dict) -> dict:
    """Run the background work once; the image's metadata then."""
    call_command("optimize", nice=0)
    return client.get(meta["href"], HTTP_ACCEPT="application/json").json()


@pytest.mark.parametrize("mode", ["inline", "deferred"])
def test_a_jpeg_is_final_at_once_and_compacted_later_served_bit_for_bit(
    client, settings, image_storage, mode
):
    settings.IMAGES_OPTIMIZE = mode
    meta = upload(client, CHINA)
    assert meta["sha256"] == hashlib.sha256(CHINA).hexdigest()
    assert meta["storedSize"] == meta["atRestSize"] == len(CHINA)  # held as received, for now
    assert meta["optimized"] is True
    first = client.get(meta["href"])
    assert "immutable" in first["Cache-Control"]
    later = compacted(client, meta)
    assert later["atRestSize"] < 0.9 * len(CHINA)
    assert (later["sha256"], later["storedSize"]) == (meta["sha256"], len(CHINA))
    assert Image.objects.get(id=meta["id"]).at_rest_form == "jxl"
    download = client.get(meta["href"])
    assert download["ETag"] == first["ETag"]
    assert body(download) == CHINA
    assert download["ETag"] == f'"{meta["sha256"]}"'
    assert int(download["Content-Length"]) == len(CHINA)
    part = client.get(meta["href"], HTTP_RANGE="bytes=1000-1999")
    assert part.status_code == 206
    assert body(part) == CHINA[1000:2000]
    assert client.head(meta["href"])["Content-Length"] == str(len(CHINA))
    thumbnail = client.get(meta["href"] + "/thumbnail?size=64")
    assert thumbnail.status_code == 200


def test_the_compact_backlog_and_its_lag_are_in_the_metrics_apart(client, settings):
    settings.IMAGES_OPTIMIZE = "deferred"
    upload(client, CHINA)
    upload(client, png_bytes(size=(64, 48), seed=7), day=2, content_type="image/png")
    metrics = client.get("/metrics").content.decode()
    assert "images_compact_backlog 1.0" in metrics
    assert "images_optimize_backlog 1.0" in metrics
    assert "images_compact_lag_seconds" in metrics
    call_command("optimize", nice=0)
    metrics = client.get("/metrics").content.decode()
    assert "images_compact_backlog 0.0" in metrics
    assert "images_optimize_backlog 0.0" in metrics
    assert 'images_compacted_total{result="compacted"}' in metrics


def test_a_multi_picture_jpeg_is_held_smaller_and_rebuilt_exactly(client):
    sent = mpo_bytes()
    with PILImage.open(io.BytesIO(sent)) as opened:
        assert opened.n_frames == 2
    meta = upload(client, sent)
    assert compacted(client, meta)["atRestSize"] < len(sent)
    assert Image.objects.get(id=meta["id"]).at_rest_form == "jxl-parts"
    assert body(client.get(meta["href"])) == sent


def test_a_cmyk_jpeg_takes_the_old_path(client):
    image = PILImage.open(io.BytesIO(png_bytes(size=(128, 96), seed=4))).convert("CMYK")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    meta = upload(client, out.getvalue())
    assert compacted(client, meta)["optimized"] is True
    row = Image.objects.get(id=meta["id"])
    assert row.at_rest_form == ""
    assert not row.compact_pending
    assert row.at_rest_size == row.stored_size <= len(out.getvalue())


def test_compact_holds_older_jpegs_as_jxl_and_serves_the_same_bytes(client, settings, capsys):
    settings.IMAGES_COMPACT_JPEG = False  # as before this change: mozjpeg's optimization
    hopper = (ROOT / "testdata" / "mpl__grace_hopper.jpg").read_bytes()
    first, second = upload(client, CHINA, day=1), upload(client, hopper, day=2)
    served = [body(client.get(meta["href"])) for meta in (first, second)]
    assert all(Image.objects.filter(at_rest_form="").values_list("optimized", flat=True))
    settings.IMAGES_COMPACT_JPEG = True
    call_command("optimize", nice=0, compact=True)
    assert "compacted 2" in capsys.readouterr().out
    assert [body(client.get(meta["href"])) for meta in (first, second)] == served
    for meta in (first, second):
        row = Image.objects.get(id=meta["id"])
        assert row.at_rest_form == "jxl"
        assert row.sha256 == meta["sha256"]
        assert row.at_rest_size < row.stored_size
    call_command("optimize", nice=0, compact=True)
    assert "compacted: nothing" in capsys.readouterr().out


@pytest.mark.django_db(transaction=True)
def test_a_compacted_image_moves_between_backends_and_stays_exact(client, settings, s3_storage):
    settings.IMAGES_STORAGE = "db"
    meta = upload(client, CHINA)
    compacted(client, meta)
    call_command("movestorage", to=s3_storage)
    assert body(client.get(meta["href"])) == CHINA
    call_command("checkstorage")
    call_command("movestorage", to="db")
    row = Image.objects.get(id=meta["id"])
    assert (row.location, row.at_rest_form) == ("", "jxl")
    assert body(client.get(meta["href"])) == CHINA
