"""A live ``manage.py runcoap`` for the CoAP interoperability tests and bench/coap.py.

Not collected by pytest (no ``test_`` prefix): imported by the CoAP test
modules and the benchmark. ``wait_for_coap`` checks readiness the CoAP way
(UDP has no connection to wait for): a GET of ``/.well-known/core`` that gets
a 2.05.
"""

from __future__ import annotations

import io
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aiocoap import GET, Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type
from PIL import Image as PILImage

from conftest import ROOT, free_port, fresh_database_url, query_database, stop


@dataclass(frozen=True)
class LiveCoap:
    """A ``runcoap`` subprocess on 127.0.0.1 and its own database."""

    port: int
    database_url: str
    process: subprocess.Popen

    @property
    def uri(self) -> str:
        return f"coap://127.0.0.1:{self.port}"

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Run SQL on the server's database (not the test database)."""
        return query_database(self.database_url, sql, params)

    def stop(self) -> None:
        stop(self.process)


def coap_ping(port: int, timeout: float = 0.3) -> bool:
    """One confirmable GET /.well-known/core; True when a 2.05 comes back."""
    mid = random.randrange(1 << 16)
    request = Message(code=GET, token=b"", uri_path=(".well-known", "core"))
    request.mtype, request.mid = Type.CON, mid
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(request.encode(), ("127.0.0.1", port))
            data, _ = sock.recvfrom(2048)
        except OSError:  # timeout, or ICMP port unreachable while nothing is bound
            return False
    answer = Message.decode(data)
    return answer.mid == mid and answer.code == Code.CONTENT


def wait_for_coap(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"runcoap exited early with code {process.returncode}")
        if coap_ping(port):
            return
        time.sleep(0.1)
    raise RuntimeError(f"no CoAP answer on UDP port {port} within {timeout} s")


def start_runcoap(
    tmp: Path, extra_env: dict[str, str] | None = None, args: Sequence[str] = ()
) -> LiveCoap:
    """``manage.py runcoap`` as an operator runs it, on a fresh database (migrated by it).

    ``args`` go after ``--host`` and ``--port`` (``--oscore-dir`` in token mode).
    """
    port = free_port(socket.SOCK_DGRAM)
    database_url = fresh_database_url(tmp)
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    command = [sys.executable, "manage.py", "runcoap", "--host", "127.0.0.1", "--port", str(port)]
    # The child writes to its own copy of the file descriptor.
    with open(tmp / "runcoap.log", "wb") as log:
        process = subprocess.Popen(
            [*command, *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_for_coap(port, process)
    except RuntimeError:
        stop(process)
        raise
    return LiveCoap(port, database_url, process)


def noise_png(side: int) -> bytes:
    """An incompressible PNG of about ``3 * side**2`` bytes (block-wise over CoAP)."""
    image = PILImage.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()
