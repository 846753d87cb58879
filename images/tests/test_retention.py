"""API.md §11 retention: ``prune`` by age and per device, through the same path as DELETE."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.utils import timezone

from conftest import png_bytes
from images.models import Image
from images.tests.test_storage import objects_in

pytestmark = pytest.mark.django_db

URL = "/collections/images?deviceId={device}&timestamp=2024-04-{day:02d}T00:00:00Z"


def upload(client, device: str, day: int) -> dict:
    data = png_bytes(size=(24, 16), seed=day + 100 * len(device))
    response = client.post(URL.format(device=device, day=day), data, content_type="image/png")
    assert response.status_code == 201
    return response.json()


def received(meta: dict, days_ago: float) -> None:
    Image.objects.filter(id=meta["id"]).update(
        received_at=timezone.now() - timedelta(days=days_ago)
    )


def test_images_received_longer_ago_than_the_setting_go(client, settings, capsys):
    settings.IMAGES_RETENTION_DAYS = 30
    old, recent = upload(client, "cam", 1), upload(client, "cam", 2)
    received(old, 31)
    received(recent, 29)
    call_command("prune", dry_run=True)
    assert (
        capsys.readouterr().out.splitlines()[-1]
        == f"would delete 1 image, {old['atRestSize']} bytes"
    )
    assert Image.objects.count() == 2

    call_command("prune", verbosity=2)  # -v 2: each image too
    out = capsys.readouterr().out
    assert f"  deleted {old['id']} cam 2024-04-01T00:00:00Z" in out
    assert f"(global settings): deleted 1 image, {old['atRestSize']} bytes" in out
    assert str(Image.objects.get().id) == recent["id"]
    assert client.get(old["href"]).status_code == 404


def test_each_device_keeps_its_newest_images_by_timestamp(client, settings):
    settings.IMAGES_RETENTION_MAX_PER_DEVICE = 2
    # Uploaded out of order: the timestamp decides, not the arrival.
    for day in (3, 1, 4, 2):
        upload(client, "a", day)
    upload(client, "b", 1)
    call_command("prune")
    kept = sorted(Image.objects.values_list("device_id", "timestamp__day"))
    assert kept == [("a", 3), ("a", 4), ("b", 1)]


def test_an_image_received_after_the_prune_began_is_never_touched(client, settings):
    settings.IMAGES_RETENTION_MAX_PER_DEVICE = 1
    newest, late = upload(client, "cam", 9), upload(client, "cam", 1)
    # The oldest by timestamp, but it arrives while the prune runs.
    Image.objects.filter(id=late["id"]).update(received_at=timezone.now() + timedelta(hours=1))
    call_command("prune")
    assert sorted(str(key) for key in Image.objects.values_list("id", flat=True)) == sorted(
        [newest["id"], late["id"]]
    )


def test_prunes_are_counted_in_metrics(client, settings):
    settings.IMAGES_RETENTION_DAYS = 1
    for day in (1, 2, 3):
        received(upload(client, "cam", day), 2)
    before = _pruned(client)
    call_command("prune")
    assert _pruned(client) == before + 3


def _pruned(client) -> float:
    for line in client.get("/metrics").content.decode().splitlines():
        if line.startswith("images_pruned_total "):
            return float(line.split()[1])
    raise AssertionError("no images_pruned_total")


def test_without_settings_prune_does_nothing(client, capsys):
    upload(client, "cam", 1)
    call_command("prune")
    assert "retention is off" in capsys.readouterr().out
    assert Image.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_pruned_images_lose_their_objects_and_thumbnails(client, settings, s3_storage):
    settings.IMAGES_RETENTION_DAYS = 7
    gone, kept = upload(client, "cam", 1), upload(client, "cam", 2)
    received(gone, 8)
    assert client.get(gone["href"] + "/thumbnail?size=32").status_code == 200
    assert cache.get(f"thumbnail:v1:{gone['sha256']}:32:webp") is not None
    assert len(objects_in(s3_storage)) == 2
    call_command("prune")
    assert len(objects_in(s3_storage)) == 1
    assert cache.get(f"thumbnail:v1:{gone['sha256']}:32:webp") is None
    assert client.get(kept["href"]).status_code == 200
