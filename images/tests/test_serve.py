"""``manage.py serve``: the production server, its workers and its shutdown."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from PIL import Image as PILImage

from conftest import (
    ROOT,
    children_running,
    fresh_database_url,
    png_bytes,
    query_database,
    start_serve,
)


@pytest.fixture
def serve(tmp_path):
    database_url = fresh_database_url(tmp_path)
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SECRET_KEY": "test-only-secret",
        "ALLOWED_HOSTS": "127.0.0.1",
    }
    process, port = start_serve(tmp_path, env)
    yield process, port, database_url
    # serve's children (granian, the optimizer) share its process group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def test_serve_refuses_to_start_without_a_secret_key(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    result = subprocess.run(
        [sys.executable, "manage.py", "serve", "--coap-port", "0"],
        cwd=ROOT,
        env={**env, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_sigterm_lets_an_in_flight_upload_finish(serve):
    process, port, database_url = serve
    body = png_bytes(size=(400, 300), seed=4)  # sent in two halves around the signal
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            b"POST /collections/images?deviceId=graceful&timestamp=2024-01-01T00:00:00Z"
            b" HTTP/1.1\r\n"
            b"Host: 127.0.0.1\r\nContent-Type: image/png\r\nAccept: application/json\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        )
        sock.sendall(body[: len(body) // 2])
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        sock.sendall(body[len(body) // 2 :])
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 201"), answer[:200]
    assert process.wait(timeout=60) == 0
    [(count,)] = query_database(
        database_url, "SELECT COUNT(*) FROM images_image WHERE device_id = ?", ("graceful",)
    )
    assert count == 1


def test_metrics_add_up_over_all_workers(serve, png):
    _, port, _ = serve
    url = f"http://127.0.0.1:{port}"

    def hit() -> None:
        for _ in range(25):
            urllib.request.urlopen(f"{url}/healthz", timeout=30).read()

    threads = [threading.Thread(target=hit) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    text = urllib.request.urlopen(f"{url}/metrics", timeout=30).read().decode()
    line = next(
        line
        for line in text.splitlines()
        if line.startswith('http_requests_total{method="GET",route="healthz",status="200"}')
    )
    assert float(line.split()[-1]) == 100


def test_serve_answers_a_jpeg_final_at_once_and_compacts_it_in_the_background(serve):
    _, port, _ = serve
    image = PILImage.open(io.BytesIO(png_bytes(size=(200, 150), seed=6))).convert("RGB")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    sent = out.getvalue()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/collections/images?deviceId=bg&timestamp=2024-01-01T00:00:00Z",
        data=sent,
        headers={"Content-Type": "image/jpeg", "Accept": "application/json"},
    )
    meta = json.loads(urllib.request.urlopen(request, timeout=30).read())
    assert meta["atRestSize"] == meta["storedSize"] == len(sent)  # held as received, for now
    assert meta["optimized"] is True  # the served bytes are final at once (API.md §14)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        metadata = urllib.request.Request(
            f"http://127.0.0.1:{port}{meta['href']}", headers={"Accept": "application/json"}
        )
        now = json.loads(urllib.request.urlopen(metadata, timeout=30).read())
        if now["atRestSize"] < len(sent):
            break
        time.sleep(0.2)
    # Held as JPEG XL in the background; served as sent (API.md §12).
    assert now["atRestSize"] < len(sent)
    assert now["sha256"] == meta["sha256"]
    stored = urllib.request.urlopen(f"http://127.0.0.1:{port}{meta['href']}", timeout=30).read()
    assert stored == sent


def test_an_optimizer_that_dies_is_restarted_and_http_keeps_serving(serve, png):
    process, port, _ = serve
    deadline = time.monotonic() + 30
    workers = os.cpu_count() or 1  # serve's default: one background worker per core
    while (
        len(first := children_running(process.pid, b"optimize")) < workers
        and time.monotonic() < deadline
    ):
        time.sleep(0.2)
    assert len(first) == workers
    os.kill(first[0], signal.SIGKILL)
    url = f"http://127.0.0.1:{port}/healthz"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        again = children_running(process.pid, b"optimize")
        if len(again) == workers and first[0] not in again:
            break
        time.sleep(0.2)
    assert len(again) == workers
    assert first[0] not in again
    assert process.poll() is None
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
