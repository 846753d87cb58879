"""The server side of ``bench/live.py``: ``manage.py serve`` and what is measured of it.

``Server`` (serve on free loopback ports, uploads, its processes by role, its
log's problems); helpers that read /proc (process tree, resident set, CPU
seconds, the kernel's UDP counters); ``Layout`` (what each stream and
registration watches); the PNGs uploaded; ``Stamps`` (increasing timestamps).

Imported as ``bench.live_server`` once ``bench/live.py`` has put the repository
root first on ``sys.path``, so that ``http`` here is the standard library's.
"""

from __future__ import annotations

import http.client
import io
import itertools
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.support import ROOT, coap_ping, free_port, serve_env, stop, wait_for_port


class Server:
    """``manage.py serve`` with HTTP, the stream listener and CoAP on free loopback ports."""

    def __init__(self, database_url: str, tmp: Path, workers: int, observers: int) -> None:
        self.port, self.events_port = free_port(), free_port()
        self.coap_port = free_port(socket.SOCK_DGRAM)
        self.url = f"http://127.0.0.1:{self.port}"
        env = serve_env(database_url, IMAGES_OBSERVE_TOTAL=str(max(10_000, observers * 2)))
        self.log_path = tmp / "serve.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
            + ["--events-port", str(self.events_port), "--coap-host", "127.0.0.1"]
            + ["--coap-port", str(self.coap_port), "--workers", str(workers)],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for_port(self.port, self.process, timeout=60)
        wait_for_port(self.events_port, self.process, timeout=60)
        deadline = time.monotonic() + 60
        while not coap_ping(self.coap_port):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"no CoAP answer on UDP {self.coap_port} (see {self.log_path})")
            time.sleep(0.2)
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
        ``http``: the WSGI workers; ``optimiser``: the deferred optimiser.
        (Granian's main processes, whose children the workers are, are left out.)
        """
        roles = {
            "events": "config.events:application",
            "http": "config.wsgi:application",
            "coap": "runcoap",
            "optimiser": "optimize --watch",
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
        self.log.close()


def parent_of(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            children[parent_of(int(entry.name))].append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.extend(children[pid])
        todo.extend(children[pid])
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def udp_counters() -> dict[str, int]:
    """The kernel's UDP counters (/proc/net/snmp): datagrams dropped show here."""
    names, values = (
        line.split()[1:]
        for line in Path("/proc/net/snmp").read_text().splitlines()
        if line.startswith("Udp:")
    )
    return dict(zip(names, map(int, values), strict=True))


def rss_kib(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1))


def memory(server: Server) -> dict[str, int]:
    """Resident KiB of the stream listener (``events``) and of runcoap (``coap``)."""
    found = server.processes()
    return {name: sum(rss_kib(pid) for pid in found[name]) for name in ("events", "coap")}


def process_cpu(pid: int) -> float:
    """CPU seconds one process has used so far (user + system; 0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


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


def noise_png(side: int) -> bytes:
    """A ``side`` x ``side`` PNG of random pixels (little for the optimiser to gain or do)."""
    from PIL import Image

    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(out, "PNG")
    return out.getvalue()


class Stamps:
    """Increasing timestamps, from a day ago: each upload is its device's newest."""

    def __init__(self) -> None:
        self.base = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
        self.count = itertools.count(1)

    def __call__(self) -> str:
        moment = self.base + timedelta(milliseconds=next(self.count))
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
