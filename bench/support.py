"""What the bench scripts share: free ports, a fresh database, a live ``runcoap``.

The benchmarks keep their own helpers rather than import the test suite's
fixtures: those change for the tests' sake, and a benchmark should run where
pytest is not installed.

Imported as ``bench.support``: every bench script puts the repository root
first on ``sys.path`` (in place of ``bench/``, whose ``http.py`` would shadow
the standard library), so this module is never a top-level ``support``.
"""

from __future__ import annotations

import os
import random
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def serve_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment the benches run the service in: this one, on ``database_url``, quiet."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "SECRET_KEY": "bench-only-secret",
        "ALLOWED_HOSTS": "127.0.0.1",
        "REQUEST_LOG_LEVEL": "WARNING",
        **extra,
    }


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that nothing is bound to now (TCP, or UDP with SOCK_DGRAM)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    """Until something accepts TCP connections on ``port``; raises if ``process`` exits first."""
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


def stop(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if ``process`` is still there after ``timeout`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def query_database(database_url: str, sql: str, params: tuple = ()) -> list[tuple]:
    """Run one statement on a SQLite or PostgreSQL URL; ``?`` placeholders on both."""
    if database_url.startswith("sqlite:///"):
        with closing(sqlite3.connect(database_url.removeprefix("sqlite:///"))) as db:
            rows = db.execute(sql, params).fetchall()
            db.commit()
            return rows
    import psycopg

    with psycopg.connect(database_url) as db:
        cursor = db.execute(sql.replace("?", "%s"), params)
        return cursor.fetchall() if cursor.description else []


def _is_postgresql(url: str) -> bool:
    return url.startswith(("postgres://", "postgresql://"))


@contextmanager
def fresh_database(directory: Path) -> Iterator[str]:
    """The URL of a new, empty database of the kind the environment names.

    A SQLite file in ``directory`` by default; when ``DATABASE_URL`` names
    PostgreSQL, a throwaway database on that server, dropped on exit (with
    FORCE, since a server that was killed may still hold connections).
    """
    outer = os.environ.get("DATABASE_URL", "")
    if not _is_postgresql(outer):
        yield f"sqlite:///{directory / 'db.sqlite3'}"
        return
    import psycopg

    server = outer.rsplit("/", 1)[0]
    name = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as db:
        db.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{server}/{name}"
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as db:
            db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass(frozen=True)
class LiveCoap:
    """A ``manage.py runcoap`` subprocess on 127.0.0.1 and the database it uses."""

    port: int
    database_url: str
    process: subprocess.Popen

    @property
    def uri(self) -> str:
        return f"coap://127.0.0.1:{self.port}"

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        return query_database(self.database_url, sql, params)

    def stop(self) -> None:
        stop(self.process)


def coap_ping(port: int, timeout: float = 0.3) -> bool:
    """One confirmable GET /.well-known/core; True when a 2.05 comes back.

    UDP has no connection to wait for, so readiness is a real CoAP answer.
    """
    from aiocoap import GET, Message
    from aiocoap.numbers.codes import Code
    from aiocoap.numbers.types import Type

    mid = random.randrange(1 << 16)
    request = Message(code=GET, token=b"", uri_path=(".well-known", "core"))
    request.mtype, request.mid = Type.CON, mid
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(request.encode(), ("127.0.0.1", port))
            data, _ = sock.recvfrom(2048)
        except OSError:  # a timeout, or ICMP port unreachable while nothing is bound
            return False
    answer = Message.decode(data)
    return answer.mid == mid and answer.code == Code.CONTENT


def start_runcoap(
    directory: Path,
    database_url: str,
    extra_env: dict[str, str] | None = None,
    args: Sequence[str] = (),
    timeout: float = 30.0,
) -> LiveCoap:
    """``manage.py runcoap`` on a free UDP port and ``database_url`` (it migrates it).

    Its output goes to ``directory/runcoap.log``; ``args`` go after ``--port``.
    """
    port = free_port(socket.SOCK_DGRAM)
    env = {**os.environ, "DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    command = [sys.executable, "manage.py", "runcoap", "--host", "127.0.0.1", "--port", str(port)]
    # The child writes to its own copy of the file descriptor.
    with open(directory / "runcoap.log", "wb") as log:
        process = subprocess.Popen(
            [*command, *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + timeout
    while not coap_ping(port):
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            raise RuntimeError(
                f"runcoap gave no CoAP answer on UDP port {port} (see {directory}/runcoap.log)"
            )
        time.sleep(0.1)
    return LiveCoap(port, database_url, process)
