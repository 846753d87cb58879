"""Shared fixtures: generated images, and a live ``runserver`` on a free port."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image as PILImage

ROOT = Path(__file__).resolve().parent


def png_bytes(size: tuple[int, int] = (20, 20), mode: str = "RGB", seed: int = 0) -> bytes:
    """A small PNG with varied pixels (a gradient offset by ``seed``)."""
    image = PILImage.new(mode, size)
    bands = len(image.getbands())
    image.putdata(
        [
            tuple((x * 7 + y * 13 + seed * 31 + b * 50) % 256 for b in range(bands))
            if bands > 1
            else (x * 7 + y * 13 + seed * 31) % 256
            for y in range(size[1])
            for x in range(size[0])
        ]
    )
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def png() -> bytes:
    return png_bytes()


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early with code {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listened on port {port} within {timeout} s")


class LiveServer:
    def __init__(self, port: int, database: Path, process: subprocess.Popen) -> None:
        self.port = port
        self.database = database
        self.process = process
        self.url = f"http://127.0.0.1:{port}"


def start_runserver(tmp: Path, extra_env: dict[str, str] | None = None) -> LiveServer:
    """``manage.py runserver`` exactly as a newcomer runs it, on a fresh SQLite file."""
    port = free_port()
    database = tmp / "db.sqlite3"
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{database}",
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    log = open(tmp / "runserver.log", "wb")  # noqa: SIM115 - lives as long as the server
    process = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_for_port(port, process)
    return LiveServer(port, database, process)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def live_server_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_runserver(tmp_path_factory.mktemp("runserver"))
    yield server
    stop(server.process)
