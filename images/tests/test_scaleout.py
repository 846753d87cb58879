"""API.md §10 end to end: two ``serve`` instances, one database, one S3 bucket, a kill -9.

The database is PostgreSQL when the suite runs on it (CI's second run),
SQLite otherwise; the bucket is in a real SeaweedFS server.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image as PILImage

from conftest import (
    ROOT,
    fresh_database_url,
    make_bucket,
    png_bytes,
    query_database,
    start_serve,
)

URL = "/collections/images?deviceId=fleet-{n}&timestamp=2024-03-01T00:00:{n:02d}Z"


def jpeg(seed: int) -> bytes:
    image = PILImage.open(io.BytesIO(png_bytes(size=(200, 150), seed=seed))).convert("RGB")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=93)
    return out.getvalue()


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def kill_9(process: subprocess.Popen) -> None:
    """What a machine that loses power does to an instance: every process stops at once."""
    for pid in descendants(process.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait()


# serve's background workers per instance (its default is one per core: named
# here, since the killed instance may hold an image in each).
BACKGROUND_WORKERS = 2


def post(base: str, n: int) -> int:
    request = urllib.request.Request(
        base + URL.format(n=n), data=jpeg(n), headers={"Content-Type": "image/jpeg"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status


def backlog(base: str) -> float:
    with urllib.request.urlopen(base + "/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("images_optimize_backlog "):
                return float(line.split()[1])
    raise AssertionError("no images_optimize_backlog in /metrics")


@pytest.mark.slow
def test_two_instances_share_the_backlog_and_a_kill_9_loses_nothing(tmp_path, object_store):
    database_url = fresh_database_url(tmp_path)
    env = {
        **os.environ,
        **object_store.environment(make_bucket(object_store), "fleet"),
        "DATABASE_URL": database_url,
        "SECRET_KEY": "test-only-secret",
        "ALLOWED_HOSTS": "127.0.0.1",
        "IMAGES_OPTIMIZE_LEASE": "3",
    }
    # Each instance's background workers: the killed one holds at most one image each.
    background = ("--optimizers", str(BACKGROUND_WORKERS))
    first, first_port = start_serve(tmp_path, env, workers=1, name="serve-a", options=background)
    second, second_port = start_serve(tmp_path, env, workers=1, name="serve-b", options=background)
    first_url, second_url = f"http://127.0.0.1:{first_port}", f"http://127.0.0.1:{second_port}"
    try:
        for n in range(40):
            assert post(first_url if n % 2 else second_url, n) == 201
        kill_9(first)  # mid-backlog: its optimizer may hold a lease
        for n in range(40, 50):
            assert post(second_url, n) == 201
        deadline = time.monotonic() + 120
        while backlog(second_url) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert backlog(second_url) == 0
    finally:
        for process in (first, second):
            if process.poll() is None:
                kill_9(process)

    rows = query_database(
        database_url,
        "SELECT optimized, attempts, length(data), location, at_rest_size, original_size"
        " FROM images_image",
    )
    assert len(rows) == 50
    assert all(optimized for optimized, *_ in rows)
    # The database holds metadata only; every image has its own object.
    assert all(
        data_length == 0 and location.startswith("s3://")
        for _, _, data_length, location, *_ in rows
    )
    assert len({location for *_, location, _, _ in rows}) == 50
    # Each image was compacted once (these JPEGs are final at once, so only
    # compaction claims them), except those the killed instance held: one
    # per background worker's compactor at most, taken over after the lease.
    assert sum(attempts for _, attempts, *_ in rows) <= 50 + BACKGROUND_WORKERS
    assert sum(stored for *_, stored, _ in rows) < sum(original for *_, original in rows)
    # Each of the killed instance's workers may have written a new object and
    # died before its row pointed at it: the leftovers that --repair is for.
    check = subprocess.run(
        [sys.executable, "manage.py", "checkstorage", "--repair", "--grace", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    print(f"\ncheckstorage after the kill -9:\n{check.stdout}", end="")
    print(f"attempts in all: {sum(attempts for _, attempts, *_ in rows)} for {len(rows)} images")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "storage is consistent" in check.stdout
    repaired = [line for line in check.stdout.splitlines() if line.endswith(": deleted")]
    assert len(repaired) <= BACKGROUND_WORKERS
    assert len(check.stdout.splitlines()) == len(repaired) + 1
