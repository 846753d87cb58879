"""Shared fixtures: generated images, and a live ``runserver`` on a free port."""

from __future__ import annotations

import io
import os
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, suppress
from pathlib import Path

import pytest
from PIL import Image as PILImage

from ops.seaweedfs import CREDENTIALS, ObjectStore

# boto3 reads credentials when its first client is made; any pair signs for
# the test store, and none of these reaches a real account.
for _name, _value in CREDENTIALS.items():
    os.environ.setdefault(_name, _value)
os.environ.setdefault("AWS_REGION", "us-east-1")

ROOT = Path(__file__).resolve().parent
# Real photographs and graphics: a few in the repository (testdata/, with
# their sources and licences), or a larger corpus named by IMAGE_CORPUS.
IMAGE_CORPUS = Path(os.environ.get("IMAGE_CORPUS") or ROOT / "testdata")
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff"})


def corpus_images(suffixes: frozenset[str] = IMAGE_SUFFIXES) -> list[Path]:
    """The corpus's images with these suffixes, by name."""
    return sorted(path for path in IMAGE_CORPUS.iterdir() if path.suffix.lower() in suffixes)


# The metadata keys of API.md §2, written out here (not taken from the
# serializer) so that the tests check the code against the contract.
METADATA_KEYS = frozenset(
    {
        "id",
        "deviceId",
        "timestamp",
        "contentType",
        "width",
        "height",
        "originalSize",
        "storedSize",
        "atRestSize",
        "sha256",
        "receivedAt",
        "optimized",
        "href",
    }
)


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


def children_running(parent: int, word: bytes) -> list[int]:
    """The processes ``parent`` started whose command line holds ``word`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with suppress(OSError):  # gone meanwhile
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[1]) == parent and word in (entry / "cmdline").read_bytes().split(b"\0"):
                found.append(int(entry.name))
    return found


def wait_until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    """Until ``check()`` is true; an AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.05)


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
    def __init__(self, port: int, database_url: str, process: subprocess.Popen) -> None:
        self.port = port
        self.database_url = database_url
        self.process = process
        self.url = f"http://127.0.0.1:{port}"

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Run SQL on the server's own database (not the test database)."""
        return query_database(self.database_url, sql, params)

    def manage(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        """``manage.py COMMAND`` on the server's database, as an operator runs it beside."""
        return subprocess.run(
            [sys.executable, "manage.py", *command],
            cwd=ROOT,
            env={**os.environ, "DATABASE_URL": self.database_url},
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
        )


def query_database(database_url: str, sql: str, params: tuple = ()) -> list[tuple]:
    if database_url.startswith("sqlite:///"):
        with closing(sqlite3.connect(database_url.removeprefix("sqlite:///"))) as db:
            rows = db.execute(sql, params).fetchall()
            db.commit()
            return rows
    import psycopg

    with psycopg.connect(database_url) as db:
        cursor = db.execute(sql.replace("?", "%s"), params)
        return cursor.fetchall() if cursor.description else []


# The machine's PostgreSQL (as on CI), for the tests of what only it does.
LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432"


def fresh_database_url(tmp: Path) -> str:
    """A new, empty database of the kind the suite runs on.

    SQLite by default; when ``DATABASE_URL`` names PostgreSQL (as in CI's
    second run), a throwaway database on that server.
    """
    outer = os.environ.get("DATABASE_URL", "")
    if not outer.startswith(("postgres://", "postgresql://")):
        return f"sqlite:///{tmp / 'db.sqlite3'}"
    return postgres_database_url(outer.rsplit("/", 1)[0])


def postgres_database_url(server: str = LOCAL_POSTGRES) -> str:
    """A throwaway database on the PostgreSQL ``server`` (dropped at the session's end)."""
    import psycopg

    name = f"live_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as db:
        db.execute(f'CREATE DATABASE "{name}"')
    _created_databases.append((server, name))
    return f"{server}/{name}"


_created_databases: list[tuple[str, str]] = []


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Drop the throwaway PostgreSQL databases the live servers used."""
    if not _created_databases:
        return
    import psycopg

    for server, name in _created_databases:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as db:
            db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_runserver(
    tmp: Path, extra_env: dict[str, str] | None = None, database_url: str | None = None
) -> LiveServer:
    """``manage.py runserver`` exactly as a newcomer runs it, on a fresh database."""
    port = free_port()
    database_url = database_url or fresh_database_url(tmp)
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    log = open(tmp / f"runserver-{port}.log", "wb")  # noqa: SIM115 - lives as long as the server
    process = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_for_port(port, process)
    return LiveServer(port, database_url, process)


def start_serve(
    tmp: Path,
    env: dict[str, str],
    *,
    workers: int = 2,
    name: str = "serve",
    events_port: int | None = None,
    options: tuple[str, ...] = (),
) -> tuple[subprocess.Popen, int]:
    """``manage.py serve`` (no CoAP) on a free port, in its own session; the process and port.

    ``env`` is the whole environment (DATABASE_URL, SECRET_KEY and the rest).
    Its event-stream listener is on ``events_port`` (default: another free port).
    ``options`` are more of serve's options.
    """
    port = free_port()
    events_port = events_port or free_port()
    log = open(tmp / f"{name}.log", "wb")  # noqa: SIM115 - the child holds its own copy
    with log:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port)]
            + ["--coap-port", "0", "--workers", str(workers), "--events-port", str(events_port)]
            + list(options),
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_for_port(port, process, timeout=60)
    wait_for_port(events_port, process, timeout=60)
    return process, port


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


# --- A real S3-compatible store (SeaweedFS), for the storage tests ------------


@pytest.fixture(scope="session")
def object_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObjectStore]:
    """One ``weed server`` for the whole run, started on first use (a few seconds)."""
    store = ObjectStore(tmp_path_factory.mktemp("weed"))
    try:
        store.wait()
        yield store
    finally:
        store.stop()


def make_bucket(store: ObjectStore) -> str:
    """A new, empty bucket in ``store``; its name."""
    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3", endpoint_url=store.endpoint_url, region_name="us-east-1")
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_storage(object_store: ObjectStore, settings, monkeypatch) -> str:
    """The service's images go to a fresh bucket (under a prefix) of the test store; its URL."""
    environment = object_store.environment(make_bucket(object_store), "images")
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings.IMAGES_STORAGE = environment["IMAGES_STORAGE"]
    settings.S3_ENDPOINT_URL = object_store.endpoint_url
    return settings.IMAGES_STORAGE


@pytest.fixture(params=["db", "s3"])
def image_storage(request: pytest.FixtureRequest, settings) -> str:
    """Each test that uses this runs twice: bytes in the database, and in an S3 bucket."""
    if request.param == "db":
        settings.IMAGES_STORAGE = "db"
        return "db"
    return request.getfixturevalue("s3_storage")
