"""The server side of ``python -m bench.live``: ``manage.py serve`` and what is measured of it.

``Server`` (serve on free loopback ports, uploads, its processes by role, its
log's problems); what is read of it from /proc (resident set and CPU seconds by
role, the kernel's UDP counters; the process tree is ``bench.support``'s);
``Layout`` (what each stream and registration watches); the PNGs uploaded;
``Stamps`` (increasing timestamps).
"""

from __future__ import annotations

import http.client
import io
import itertools
import json
import re
import socket
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.coapsupport import coap_ping
from bench.support import (
    cmdline,
    descendants,
    free_port,
    parent_of,
    process_cpu,
    serve_env,
    start_serve,
    status_kib,
    stop,
    wait_for_port,
)


class Server:
    """``manage.py serve`` with HTTP, the stream listener and CoAP on free loopback ports."""

    def __init__(self, database_url: str, tmp: Path, workers: int, observers: int) -> None:
        self.port, self.events_port = free_port(), free_port()
        self.coap_port = free_port(socket.SOCK_DGRAM)
        self.url = f"http://127.0.0.1:{self.port}"
        env = serve_env(database_url, IMAGES_OBSERVE_TOTAL=str(max(10_000, observers * 2)))
        self.log_path = tmp / "serve.log"
        self.process = start_serve(
            self.log_path,
            env,
            self.port,
            workers,
            *("--events-port", str(self.events_port), "--coap-host", "127.0.0.1"),
            *("--coap-port", str(self.coap_port)),
            new_session=True,
        )
        try:
            wait_for_port(self.events_port, self.process, timeout=60)
            deadline = time.monotonic() + 60
            while not coap_ping(self.coap_port):
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(
                        f"no CoAP answer on UDP {self.coap_port} (see {self.log_path})"
                    )
                time.sleep(0.2)
        except BaseException:
            stop(self.process, timeout=60)
            raise
        self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def upload(
        self, body: bytes, device: str, timestamp: str, content_type: str = "image/png"
    ) -> tuple[dict, float]:
        """Store one image; its metadata and the ``time.time()`` at which the 201 was read."""
        path = f"/collections/images?deviceId={device}&timestamp={timestamp}"
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        self.connection.request("POST", path, body, headers)
        response = self.connection.getresponse()
        answer = response.read()
        arrived = time.time()
        if response.status != 201:
            raise RuntimeError(f"upload answered {response.status}: {answer[:300]!r}")
        return json.loads(answer), arrived

    def processes(self) -> dict[str, list[int]]:
        """serve's processes by role, found under it in /proc.

        ``events``: the stream listener's granian worker; ``coap``: runcoap;
        ``http``: the WSGI workers; ``optimizer``: the deferred optimizer.
        (Granian's main processes, whose children the workers are, are left out.)
        """
        roles = {
            "events": "config.events:application",
            "http": "config.wsgi:application",
            "coap": "runcoap",
            "optimizer": "optimize --watch",
        }
        found: dict[str, list[int]] = defaultdict(list)
        for pid in descendants(self.process.pid):
            command = cmdline(pid)
            for role, mark in roles.items():
                granian = role in ("events", "http")
                if mark in command and (not granian or mark in cmdline(parent_of(pid))):
                    found[role].append(pid)
        return found

    def log_problems(self) -> Counter[str]:
        """The log's error and warning lines, timestamps dropped, counted."""
        pattern = re.compile(r"Traceback|ERROR|WARNING|Error|Exception|exited")
        stamp = re.compile(r"^\d{4}-\d\d-\d\d [\d:,.]+ ")
        return Counter(
            stamp.sub("", line)
            for line in self.log_path.read_text(errors="replace").splitlines()
            if pattern.search(line)
        )

    def stop(self) -> None:
        self.connection.close()
        stop(self.process, timeout=60)


def udp_counters() -> dict[str, int]:
    """The kernel's UDP counters (/proc/net/snmp): datagrams dropped show here."""
    names, values = (
        line.split()[1:]
        for line in Path("/proc/net/snmp").read_text().splitlines()
        if line.startswith("Udp:")
    )
    return dict(zip(names, map(int, values), strict=True))


def memory(server: Server) -> dict[str, int]:
    """Resident KiB of the stream listener (``events``) and of runcoap (``coap``)."""
    found = server.processes()
    return {name: sum(status_kib(pid) for pid in found[name]) for name in ("events", "coap")}


def cpu_seconds(server: Server) -> dict[str, dict[int, float]]:
    """CPU seconds used so far by each process of each role."""
    return {
        role: {pid: process_cpu(pid) for pid in pids} for role, pids in server.processes().items()
    }


@dataclass
class Layout:
    """What each stream and each registration watches."""

    devices: list[str]
    paths: list[str]  # per stream: /events or /devices/{id}/events
    watched: list[str | None]  # per stream: its device, None for all
    observed: list[str]  # per registration: its device
    observing: list[int] = field(default_factory=list)  # registrations the server accepted

    @classmethod
    def make(cls, streams: int, observers: int, devices: int, all_share: float) -> Layout:
        names = [f"live-{number}" for number in range(devices)]
        every = round(streams * all_share)
        watched: list[str | None] = [None] * every
        watched += [names[number % devices] for number in range(streams - every)]
        paths = ["/events" if d is None else f"/devices/{d}/events" for d in watched]
        observed = [names[number % devices] for number in range(observers)]
        return cls(names, paths, watched, observed)


def small_png(number: int) -> bytes:
    """An 8x8 PNG of one colour, a different one per ``number``: its own sha256, so ETag."""
    from PIL import Image

    colour = (number & 0xFF, (number >> 8) & 0xFF, (number >> 16) & 0xFF)
    out = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(out, "PNG")
    return out.getvalue()


class Stamps:
    """Increasing timestamps, from a day ago: each upload is its device's newest."""

    def __init__(self) -> None:
        self.base = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
        self.count = itertools.count(1)

    def __call__(self) -> str:
        moment = self.base + timedelta(milliseconds=next(self.count))
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
