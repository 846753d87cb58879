"""API.md §10, §14: the shared backlogs: claims, leases, attempts, outages, metrics, status.

The optimize backlog is exercised with JPEGs taking mozjpeg's path
(compaction off); the compact backlog's own behaviour is at the end.
"""

from __future__ import annotations

import io
import subprocess
import sys
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from PIL import Image as PILImage

from conftest import ROOT, png_bytes, start_runserver, stop
from images.errors import StorageUnavailable
from images.lifecycle import backlog, compactor, optimizer
from images.models import Image

pytestmark = pytest.mark.django_db

URL = "/collections/images?deviceId=backlog&timestamp=2024-02-{day:02d}T00:00:00Z"


@pytest.fixture(autouse=True)
def deferred(settings):
    settings.IMAGES_OPTIMIZE = "deferred"
    settings.IMAGES_COMPACT_JPEG = False


def jpeg(seed: int) -> bytes:
    image = PILImage.open(io.BytesIO(png_bytes(size=(96, 64), seed=seed))).convert("RGB")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=92)
    return out.getvalue()


def upload(client, day: int) -> dict:
    response = client.post(URL.format(day=day), jpeg(day), content_type="image/jpeg")
    assert response.status_code == 201
    return response.json()


def test_each_claim_takes_another_image_oldest_first(client):
    first, second = upload(client, 1), upload(client, 2)
    claims = [backlog.OPTIMIZE.claim(), backlog.OPTIMIZE.claim(), backlog.OPTIMIZE.claim()]
    assert [str(claim.image_id) for claim in claims[:2]] == [first["id"], second["id"]]
    assert claims[2] is None
    assert [claim.attempts for claim in claims[:2]] == [1, 1]


def test_a_dead_workers_image_is_taken_over_once_its_lease_runs_out(client, settings):
    meta = upload(client, 1)
    assert backlog.OPTIMIZE.claim() is not None  # this worker dies holding it
    assert backlog.OPTIMIZE.claim() is None
    later = timezone.now() + timedelta(seconds=settings.IMAGES_OPTIMIZE_LEASE + 1)
    taken = backlog.OPTIMIZE.claim(now=later)
    assert str(taken.image_id) == meta["id"]
    assert taken.attempts == 2


def test_an_image_that_used_up_its_attempts_is_kept_as_received(client, settings):
    meta = upload(client, 1)
    Image.objects.filter(id=meta["id"]).update(attempts=settings.IMAGES_OPTIMIZE_ATTEMPTS)
    assert optimizer.optimize_next() == "kept"
    row = Image.objects.get(id=meta["id"])
    assert row.optimized
    assert row.lease_until is None
    assert row.sha256 == meta["sha256"]
    assert optimizer.optimize_next() is None


def test_an_image_the_optimizer_cannot_read_is_kept_as_received(client):
    meta = upload(client, 1)
    garbage = b"\xff\xd8" + bytes(meta["storedSize"] - 2)  # a JPEG marker, then zeros
    Image.objects.filter(id=meta["id"]).update(data=garbage)
    assert optimizer.optimize_next() == "kept"
    assert Image.objects.get(id=meta["id"]).optimized


def test_a_store_outage_releases_the_claim_for_later(client, settings, s3_storage):
    meta = upload(client, 1)
    settings.S3_ENDPOINT_URL = "http://127.0.0.1:9"
    settings.S3_TIMEOUT = 1
    with pytest.raises(StorageUnavailable):
        optimizer.optimize_next()
    row = Image.objects.get(id=meta["id"])
    assert not row.optimized
    assert row.lease_until is None


def test_quick_effort_while_the_backlog_lags(client, settings):
    settings.IMAGES_COMPACT_JPEG = False  # the optimizer's own path, not JPEG XL
    upload(client, 1)
    Image.objects.update(received_at=timezone.now() - timedelta(seconds=30))
    settings.IMAGES_OPTIMIZE_LAG_BOUND = 60  # 30 s is past a tenth of it
    assert optimizer.optimize_next() == "optimized"
    metrics = client.get("/metrics").content.decode()
    assert 'images_optimized_total{effort="quick",result="optimized"} 1.0' in metrics


def test_past_the_lag_bound_an_image_is_kept_as_received_and_final(client, settings):
    settings.IMAGES_COMPACT_JPEG = False
    meta = upload(client, 1)
    fresh = upload(client, 2)
    Image.objects.filter(id=meta["id"]).update(received_at=timezone.now() - timedelta(minutes=5))
    settings.IMAGES_OPTIMIZE_LAG_BOUND = 60
    shed = 'images_optimized_total{effort="none",result="kept"}'
    full = 'images_optimized_total{effort="full",result="optimized"}'
    before = counter(client, shed), counter(client, full)
    assert optimizer.optimize_next() == "kept"  # the oldest first: untried
    kept = client.get(meta["href"])
    assert kept.content == jpeg(1)  # the bytes as received, final
    assert "immutable" in kept["Cache-Control"]
    row = Image.objects.get(id=meta["id"])
    assert (row.optimized, row.failure, row.attempts) == (True, "", 1)
    assert optimizer.optimize_next() == "optimized"  # the fresh one gets the full effort
    assert (counter(client, shed), counter(client, full)) == (before[0] + 1, before[1] + 1)
    assert Image.objects.get(id=fresh["id"]).optimized


def test_metrics_show_the_backlog_and_its_lag(client):
    for day in (1, 2, 3):
        upload(client, day)
    Image.objects.filter(timestamp__day=1).update(received_at=timezone.now() - timedelta(hours=1))
    metrics = client.get("/metrics").content.decode()
    assert "images_optimize_backlog 3.0" in metrics
    lag = next(line for line in metrics.splitlines() if line.startswith("images_optimize_lag"))
    assert 3500 < float(lag.split()[1]) < 3700
    optimizer.optimize_pending(batch=10)
    metrics = client.get("/metrics").content.decode()
    assert "images_optimize_backlog 0.0" in metrics
    assert "images_optimize_lag_seconds 0.0" in metrics


def test_coap_and_http_promise_a_long_life_only_once_bytes_are_final(client):
    meta = upload(client, 1)
    assert "immutable" not in client.get(meta["href"])["Cache-Control"]
    optimizer.optimize_pending()
    assert "immutable" in client.get(meta["href"])["Cache-Control"]


@pytest.mark.slow
def test_concurrent_workers_optimize_each_image_exactly_once(tmp_path):
    """Three ``optimize`` processes on one database share 24 waiting images."""
    server = start_runserver(tmp_path, {"IMAGES_OPTIMIZE": "deferred", "IMAGES_COMPACT_JPEG": "0"})
    try:
        import urllib.request

        for day in range(1, 25):
            request = urllib.request.Request(
                server.url + URL.format(day=day),
                data=jpeg(day),
                headers={"Content-Type": "image/jpeg"},
            )
            assert urllib.request.urlopen(request).status == 201
    finally:
        stop(server.process)
    env = {"DATABASE_URL": server.database_url, "PYTHONUNBUFFERED": "1", "IMAGES_COMPACT_JPEG": "0"}
    workers = [
        subprocess.Popen(
            [sys.executable, "manage.py", "optimize", "--nice", "0"],
            cwd=ROOT,
            env={**__import__("os").environ, **env},
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    counts = [int(worker.communicate(timeout=120)[0].split()[1]) for worker in workers]
    assert sum(counts) == 24
    rows = server.query("SELECT optimized, attempts FROM images_image")
    assert len(rows) == 24
    assert all(optimized and attempts == 1 for optimized, attempts in rows), rows


# --- The compact backlog, and the two together ------------------------------------


def test_a_compactable_jpeg_waits_in_the_compact_backlog_not_the_optimize_one(client, settings):
    settings.IMAGES_COMPACT_JPEG = True
    meta = upload(client, 1)
    row = Image.objects.get(id=meta["id"])
    assert (row.optimized, row.compact_pending) == (True, True)
    assert optimizer.optimize_next() is None
    assert compactor.compact_next() == "compacted"
    row = Image.objects.get(id=meta["id"])
    assert (row.compact_pending, row.at_rest_form, row.sha256) == (False, "jxl", meta["sha256"])
    assert compactor.compact_next() is None


def test_compacting_yields_while_optimizing_lags_then_catches_up(client, settings):
    settings.IMAGES_OPTIMIZE_LAG_BOUND = 600  # a short bound
    png = client.post(
        URL.format(day=1), png_bytes(size=(64, 48), seed=3), content_type="image/png"
    ).json()
    settings.IMAGES_COMPACT_JPEG = True
    jpeg_meta = upload(client, 2)
    # A sustained offered rate: the optimize backlog is behind its bound.
    Image.objects.filter(id=png["id"]).update(received_at=timezone.now() - timedelta(minutes=5))
    assert compactor.compact_next() is None  # yields: the JPEG stays held as received
    assert Image.objects.get(id=jpeg_meta["id"]).compact_pending
    assert client.get(jpeg_meta["href"]).status_code == 200  # and served at once meanwhile
    assert optimizer.optimize_next() == "optimized"  # the load falls
    assert compactor.compact_next() == "compacted"


def test_status_lists_both_backlogs_and_the_failed_which_retry_queues_again(
    client, settings, capsys
):
    settings.IMAGES_COMPACT_JPEG = True
    kept = upload(client, 1)
    upload(client, 2)
    Image.objects.filter(id=kept["id"]).update(attempts=settings.IMAGES_OPTIMIZE_ATTEMPTS)
    assert compactor.compact_next() == "kept"  # used up its attempts: held as received
    call_command("optimize", status=True)
    out = capsys.readouterr().out
    assert "compact backlog: 1 waiting" in out
    assert "optimize backlog: 0 waiting" in out
    assert f"{kept['id']}  backlog  compact: gave up after" in out
    call_command("optimize", retry=[kept["id"]])
    assert "queued 1 image again" in capsys.readouterr().out
    row = Image.objects.get(id=kept["id"])
    assert (row.compact_pending, row.failure, row.attempts) == (True, "", 1)
    assert compactor.compact_next() == "compacted"
    with pytest.raises(CommandError, match="had not failed"):
        call_command("optimize", retry=[kept["id"]])


def test_an_old_image_queued_again_by_retry_is_tried_not_shed(client, settings):
    meta = upload(client, 1)
    settings.IMAGES_OPTIMIZE_LAG_BOUND = 60
    Image.objects.filter(id=meta["id"]).update(
        received_at=timezone.now() - timedelta(days=3), optimized=True, failure="optimize: boom"
    )
    call_command("optimize", retry=[meta["id"]])
    quick = 'images_optimized_total{effort="quick",result="optimized"}'
    before = counter(client, quick)
    assert optimizer.optimize_next() == "optimized"
    assert client.get(meta["href"]).content != jpeg(1)  # mozjpeg's smaller, lossless form
    assert counter(client, quick) == before + 1


def counter(client, name: str) -> float:
    """A counter's value in ``/metrics`` (0 before it first counts); counters outlive a test."""
    for line in client.get("/metrics").content.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0
