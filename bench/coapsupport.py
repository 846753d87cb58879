"""What the CoAP benches share: a ``manage.py runcoap`` to measure, and a readiness ping."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.support import ROOT, free_port, query_database, stop


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
