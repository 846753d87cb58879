"""API.md §14 "Every read is checked": bytes that are not what was received are never served.

Each test damages what is held for an image the way storage fails (a bit
flipped in a compacted JPEG XL form, a row or an object cut short, a byte
changed in the middle of a large image), in the database and in a real S3
store (SeaweedFS), then asks for it: 503 naming the image as damaged,
counted in ``images_damaged_total``, never cached, and named by
``checkstorage``.
"""

from __future__ import annotations

import hashlib
import io
import re

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from PIL import Image as PILImage

from conftest import png_bytes
from images.errors import ImageDamaged
from images.models import Image
from images.storage import split_location
from images.tests.test_storage import noise_png, object_bytes, s3, streamed

pytestmark = pytest.mark.django_db

URL = "/collections/images?deviceId={device}&timestamp=2024-06-0{day}T00:00:00Z"


def photo_jpeg(seed: int) -> bytes:
    """A camera-like JPEG, which JPEG XL holds smaller (a compactable image)."""
    image = PILImage.open(io.BytesIO(png_bytes(size=(160, 120), seed=seed))).convert("RGB")
    image = image.resize((320, 240), PILImage.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def upload(client, data: bytes, content_type: str, device: str, day: int = 1) -> dict:
    response = client.post(URL.format(device=device, day=day), data, content_type=content_type)
    assert response.status_code == 201, response.content
    return response.json()


def held(image_id: str) -> bytes:
    row = Image.objects.get(id=image_id)
    return object_bytes(row.location) if row.location else bytes(row.data)


def hold(image_id: str, data: bytes) -> None:
    """Put ``data`` where the image's bytes are, as a failing disk or store would."""
    row = Image.objects.defer("data").get(id=image_id)
    if row.location:
        bucket, key = split_location(row.location)
        s3().put_object(Bucket=bucket, Key=key, Body=data)
    else:
        Image.objects.filter(id=image_id).update(data=data)


def damaged_count(client) -> float:
    text = client.get("/metrics").content.decode()
    found = re.search(r"^images_damaged_total (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def assert_refused_as_damaged(client, meta: dict) -> None:
    response = client.get(meta["href"])
    assert response.status_code == 503, response.content
    detail = response.json()["errors"]["detail"][0]
    assert meta["id"] in detail
    assert "damaged" in detail


def assert_named_by_checkstorage(meta: dict, capsys) -> None:
    with pytest.raises(CommandError, match="1 problem found"):
        call_command("checkstorage", grace=0)
    assert f"image {meta['id']}: damaged" in capsys.readouterr().out


@pytest.mark.parametrize("where", [0.2, 0.5, 0.8, 0.97])
def test_a_bit_flipped_in_a_compacted_form_is_refused_never_served(
    client, settings, image_storage, where, capsys
):
    settings.IMAGES_COMPACT_JPEG = True
    # A new image for each run: a sound copy read before would be served
    # from the process's cache of checked bytes, rightly.
    sent = photo_jpeg(seed=int(where * 100) + len(image_storage))
    meta = upload(client, sent, "image/jpeg", device=f"flip-{where}")
    call_command("optimize", nice=0)  # compacted at rest, whenever that happens
    row = Image.objects.defer("data").get(id=meta["id"])
    assert row.at_rest_form
    form = bytearray(held(meta["id"]))
    form[int(len(form) * where)] ^= 0x10
    hold(meta["id"], bytes(form))
    before = damaged_count(client)

    assert_refused_as_damaged(client, meta)
    assert_refused_as_damaged(client, meta)  # the damaged bytes were not cached either
    assert client.get(f"{meta['href']}/thumbnail?size=64").status_code == 503
    assert damaged_count(client) >= before + 2
    assert_named_by_checkstorage(meta, capsys)


def test_a_row_or_object_cut_short_is_refused_not_served_with_a_wrong_length(
    client, image_storage, capsys
):
    sent = png_bytes(size=(64, 48), seed=41 + len(image_storage))
    meta = upload(client, sent, "image/png", device="cut")
    whole = held(meta["id"])
    hold(meta["id"], whole[: len(whole) // 2])
    assert_refused_as_damaged(client, meta)
    by_key = client.get(URL.format(device="cut", day=1))
    assert by_key.status_code == 503
    assert_named_by_checkstorage(meta, capsys)
    hold(meta["id"], whole)  # mended: served again, exactly
    assert client.get(meta["href"]).content == whole


def test_a_large_image_damaged_mid_way_is_cut_short_of_its_length(client, image_storage, capsys):
    sent = noise_png(700, seed=42 + len(image_storage))  # streamed, not read whole
    meta = upload(client, sent, "image/png", device="large")
    damaged = bytearray(held(meta["id"]))
    damaged[len(damaged) // 2] ^= 0xFF
    hold(meta["id"], bytes(damaged))
    response = client.get(meta["href"])
    assert response.streaming
    assert int(response["Content-Length"]) == meta["storedSize"]
    # The body breaks off at its end instead of completing: a client never
    # takes it for the image.
    with pytest.raises(ImageDamaged):
        streamed(response)
    assert_named_by_checkstorage(meta, capsys)


def test_sound_images_are_served_and_checked_as_consistent(client, settings, capsys):
    settings.IMAGES_COMPACT_JPEG = True
    sent = photo_jpeg(seed=43)
    meta = upload(client, sent, "image/jpeg", device="sound")
    call_command("optimize", nice=0)
    assert client.get(meta["href"]).content == sent
    assert hashlib.sha256(sent).hexdigest() == meta["sha256"]
    call_command("checkstorage")
    assert "storage is consistent" in capsys.readouterr().out


def test_checkstorage_scrubs_at_a_bounded_rate(client, capsys):
    for day in range(1, 4):
        upload(client, png_bytes(size=(16, 16), seed=50 + day), "image/png", "scrub", day)
    call_command("checkstorage", scrub_rate=1000)
    assert "storage is consistent" in capsys.readouterr().out
