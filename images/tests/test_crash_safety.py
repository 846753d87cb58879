"""Crash safety: ``kill -9`` of the production server in the middle of uploads.

Twenty client threads upload distinct images to ``manage.py serve`` until the
whole process group (supervisor, granian and its workers, the optimizer,
mozjpeg children) is killed with SIGKILL, as an OOM killer would. Then the
SQLite file must pass ``PRAGMA integrity_check``, and a server restarted on
the same database must serve every upload that was answered 200/201
pixel-identical to what was sent, and byte-identical to the sha256 of its
answer. With ``IMAGES_OPTIMIZE=deferred`` (serve's default) the full pass may
have replaced the bytes since the answer, as settings.py documents; the
bytes served must then match their own ETag. An upload that was never
answered may or may not be stored, but if it is, it is whole.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from contextlib import closing, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest
from PIL import Image as PILImage

from conftest import ROOT, free_port, fresh_database_url, png_bytes, query_database, wait_for_port
from formats.rfc3339 import parse_timestamp
from images.compression import pixels_equal

CLIENTS = 20
# Uploads run until this many are acknowledged (or for UPLOAD_SECONDS) before the kill.
ACKNOWLEDGED_BEFORE_KILL = 150
UPLOAD_SECONDS = 15.0
REQUEST_TIMEOUT = 15.0
TIME_BUDGET_SECONDS = 60


@dataclass
class Served:
    """A ``manage.py serve`` process group on a free loopback port."""

    process: subprocess.Popen
    port: int
    database_url: str
    log: IO[bytes]


def call(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection; header names in lower case."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        answer_headers = {name.lower(): value for name, value in response.getheaders()}
        return response.status, answer_headers, response.read()
    finally:
        connection.close()


def start_serve(
    tmp: Path,
    *,
    database_url: str | None = None,
    workers: int = 2,
    extra_env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
) -> Served:
    """``manage.py serve`` (granian, DEBUG off, HTTP only) in its own session, once healthy.

    Its own session (process group) lets a test kill the supervisor and every
    child at once. TMPDIR keeps the metrics directory it makes under ``tmp``.
    """
    port = free_port()
    database_url = database_url or fresh_database_url(tmp)
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SECRET_KEY": "test-only-secret",
        "ALLOWED_HOSTS": "127.0.0.1",
        "TMPDIR": str(tmp),
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    log = open(tmp / f"serve-{port}.log", "wb")  # noqa: SIM115 - closed by kill/stop_serve
    process = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port)]
        + ["--coap-port", "0", "--workers", str(workers), *args]
        # A free port for the stream listener too (its default, port + 1, may be taken).
        + ["--events-port", str(free_port())],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    served = Served(process, port, database_url, log)
    try:
        wait_for_port(port, process, timeout=60)
        deadline = time.monotonic() + 60
        while True:  # the port is bound before the workers are up
            with suppress(OSError, http.client.HTTPException):
                if call(port, "GET", "/healthz")[0] == 200:
                    return served
            assert time.monotonic() < deadline, "serve did not become healthy"
            time.sleep(0.1)
    except BaseException:
        kill_serve(served)
        raise


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError):
            # "pid (comm) state ppid ...": comm may hold spaces, so split after the ")".
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, children first (from /proc)."""
    found, parents = [], [pid]
    while parents:
        children = [child for parent in parents for child in child_pids(parent)]
        found += children
        parents = children
    return found


def kill_serve(served: Served) -> None:
    """SIGKILL to serve's process group and every process below it: nothing cleans up."""
    tree = descendants(served.process.pid)
    with suppress(ProcessLookupError):
        os.killpg(served.process.pid, signal.SIGKILL)
    for pid in tree:  # children in process groups of their own too
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    served.process.wait(timeout=30)
    served.log.close()


def stop_serve(served: Served) -> None:
    """SIGTERM to serve alone (it forwards it), as systemd's KillMode=mixed does; then SIGKILL."""
    if served.process.poll() is None:
        served.process.send_signal(signal.SIGTERM)
        try:
            served.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            kill_serve(served)
    served.log.close()


def distinct_image(client: int, number: int) -> tuple[bytes, str]:
    """A noise image no other upload repeats: PNG, BMP (stored as PNG) or JPEG (mozjpeg)."""
    rng = random.Random(client * 1_000_003 + number)
    size = (96, 64)
    image = PILImage.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))
    out = io.BytesIO()
    if number % 4 == 3:
        image.save(out, "JPEG", quality=90)
        return out.getvalue(), "image/jpeg"
    if number % 4 == 2:
        image.save(out, "BMP")
        return out.getvalue(), "image/bmp"
    image.save(out, "PNG", compress_level=1)
    return out.getvalue(), "image/png"


@dataclass
class Upload:
    device_id: str
    timestamp: str
    sent: bytes
    status: int | None = None  # None: unanswered (the server died first)
    meta: dict | None = None


def upload_until_cut_off(port: int, client: int, stop: threading.Event, log: list[Upload]) -> None:
    """Upload distinct images one after the other until stopped or cut off by the kill."""
    for number in range(10_000):
        if stop.is_set():
            return
        sent, content_type = distinct_image(client, number)
        upload = Upload(f"crash-{client:02d}", f"2024-01-01T00:00:00.{number:06d}Z", sent)
        log.append(upload)
        path = f"/collections/images?deviceId={upload.device_id}&timestamp={upload.timestamp}"
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        try:
            status, _, body = call(port, "POST", path, sent, headers)
        except (OSError, http.client.HTTPException):
            return  # reset or refused: this upload was in flight at the kill
        upload.status = status
        upload.meta = json.loads(body) if status in (200, 201) else None


def damage(port: int, upload: Upload, *, may_be_reoptimized: bool) -> list[str]:
    """What is wrong with an acknowledged upload as the server now serves it (nothing: [])."""
    status, headers, body = call(port, "GET", upload.meta["href"])
    if status != 200:
        return [f"status {status}"]
    served_sha256 = hashlib.sha256(body).hexdigest()
    problems = []
    if headers.get("etag") != f'"{served_sha256}"':
        problems.append("ETag is not the sha256 of the bytes")
    if served_sha256 != upload.meta["sha256"] and not may_be_reoptimized:
        problems.append("bytes differ from the answer's sha256")
    if not pixels_equal(body, upload.sent):
        problems.append("pixels differ from what was sent")
    return problems


@pytest.mark.parametrize("optimize", ["inline", "deferred"])
def test_acknowledged_uploads_survive_a_kill_9_of_the_whole_server(tmp_path, optimize):
    started = time.monotonic()
    extra_env = {"IMAGES_OPTIMIZE": optimize}
    served = start_serve(tmp_path, extra_env=extra_env)
    logs: list[list[Upload]] = [[] for _ in range(CLIENTS)]
    stop = threading.Event()
    threads = [
        threading.Thread(target=upload_until_cut_off, args=(served.port, i, stop, logs[i]))
        for i in range(CLIENTS)
    ]
    restarted: Served | None = None
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + UPLOAD_SECONDS
        while time.monotonic() < deadline:
            acknowledged = sum(u.status in (200, 201) for log in logs for u in log)
            if acknowledged >= ACKNOWLEDGED_BEFORE_KILL:
                break
            time.sleep(0.05)
        kill_serve(served)  # mid-way: every client has an upload in flight
        stop.set()
        for thread in threads:
            thread.join(timeout=REQUEST_TIMEOUT + 5)
        assert not any(thread.is_alive() for thread in threads)

        uploads = [u for log in logs for u in log]
        acknowledged_uploads = [u for u in uploads if u.status in (200, 201)]
        unanswered = [u for u in uploads if u.status is None]
        refused = [(u.device_id, u.timestamp, u.status) for u in uploads]
        refused = [entry for entry in refused if entry[2] not in (None, 200, 201)]
        assert acknowledged_uploads, "no upload was acknowledged before the kill"
        assert refused == []

        database = served.database_url
        if database.startswith("sqlite:///"):
            with closing(sqlite3.connect(database.removeprefix("sqlite:///"))) as db:
                assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]

        restarted = start_serve(tmp_path, database_url=database, extra_env=extra_env)
        deferred = optimize == "deferred"
        lost = []
        for upload in acknowledged_uploads:
            problems = damage(restarted.port, upload, may_be_reoptimized=deferred)
            if problems:
                lost.append((upload.device_id, upload.timestamp, problems))

        # Whatever else is stored (an upload cut off after its commit) is whole too.
        sent = {(u.device_id, parse_timestamp(u.timestamp)): u for u in uploads}
        rows = query_database(database, "SELECT id FROM images_image")
        torn = []
        for (image_id,) in rows:
            href = f"/collections/images/{uuid.UUID(str(image_id))}"
            _, _, body = call(restarted.port, "GET", href, headers={"Accept": "application/json"})
            meta = json.loads(body)
            upload = sent.get((meta["deviceId"], parse_timestamp(meta["timestamp"])))
            status, _, body = call(restarted.port, "GET", href)
            if upload is None or status != 200 or not pixels_equal(body, upload.sent):
                torn.append((meta["deviceId"], meta["timestamp"], status))

        print(
            f"\ncrash safety ({optimize}): {len(uploads)} uploads by {CLIENTS} clients, "
            f"{len(acknowledged_uploads)} acknowledged before kill -9, "
            f"{len(unanswered)} in flight and unanswered, {len(rows)} rows after restart, "
            f"{len(lost)} acknowledged uploads lost or changed, {len(torn)} rows not whole"
        )
        assert lost == []
        assert torn == []
        assert len(rows) >= len(acknowledged_uploads)
    finally:
        stop.set()
        if served.process.poll() is None:
            kill_serve(served)
        if restarted is not None:
            stop_serve(restarted)
    assert time.monotonic() - started < TIME_BUDGET_SECONDS


def test_twenty_concurrent_identical_uploads_to_serve_store_one_row(tmp_path):
    served = start_serve(tmp_path)
    try:
        image = png_bytes(size=(200, 150), seed=91)
        path = "/collections/images?deviceId=serve-concurrent&timestamp=2024-05-05T05:05:05Z"
        results: list[tuple[int, str]] = []
        lock = threading.Lock()
        barrier = threading.Barrier(CLIENTS, timeout=30)

        def upload() -> None:
            barrier.wait()
            headers = {"Content-Type": "image/png", "Accept": "application/json"}
            status, _, body = call(served.port, "POST", path, image, headers)
            with lock:
                results.append((status, json.loads(body).get("id", "")))

        threads = [threading.Thread(target=upload) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        statuses = sorted(status for status, _ in results)
        assert statuses == [200] * (CLIENTS - 1) + [201]
        assert len({image_id for _, image_id in results}) == 1
        [(count,)] = query_database(
            served.database_url,
            "SELECT COUNT(*) FROM images_image WHERE device_id = ?",
            ("serve-concurrent",),
        )
        assert count == 1
    finally:
        stop_serve(served)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_group_signal_reaches_granians_workers_only_through_serve(tmp_path):
    served = start_serve(tmp_path, extra_env={"IMAGES_OPTIMIZE": "inline"})
    try:
        workers = [pid for child in child_pids(served.process.pid) for pid in child_pids(child)]
        assert workers
        serve_group = os.getpgid(served.process.pid)
        assert all(os.getpgid(worker) != serve_group for worker in workers)
    finally:
        stop_serve(served)
