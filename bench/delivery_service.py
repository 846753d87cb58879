"""Uploads and the service for ``bench/deliveries.py``: timed uploads, ``serve`` with receivers.

- :func:`images` and :func:`upload_all`: distinct small PNGs, uploaded from
  threads on keep-alive connections, each 201 stamped with ``time.time()``;
- :class:`Service`: a ``serve`` on a fresh database, its webhooks added with
  ``manage.py webhook add``, its CPU by role, ``images_delivery_backlog``
  from /metrics, a receiver's retry state, its log's problems;
- :func:`box_cpu`: the whole machine's busy and total CPU seconds.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.support import (
    ROOT,
    cmdline,
    descendants,
    free_port,
    noise_png,
    process_cpu,
    query_database,
    serve_env,
    start_serve,
    stop,
)

DEVICES = 10
LIVE = 9  # live webhook receivers; one more is dead (a closed port)
PREFIX = "bench"
ROLES = {
    "http": "config.wsgi:application",
    "deliver": "manage.py deliver",
    "streams": "config.events:application",
}


# --- Uploads -------------------------------------------------------------------


@dataclass
class Uploads:
    answered: dict[str, float] = field(default_factory=dict)  # image id: time of its 201
    latencies: list[float] = field(default_factory=list)  # seconds per request
    errors: int = 0
    started: float = 0.0
    ended: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.answered) / max(self.ended - self.started, 1e-9)


def images(count: int, first: int) -> list[tuple[str, str, bytes]]:
    """(device, timestamp, distinct PNG) for uploads ``first`` to ``first + count``."""
    base = datetime(2025, 1, 1, tzinfo=UTC)
    made = []
    for number in range(first, first + count):
        stamp = (base + timedelta(milliseconds=number)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        made.append((f"dlv-{number % DEVICES}", stamp, noise_png(32, seed=number)))
    return made


def upload_all(
    port: int, items: list[tuple[str, str, bytes]], clients: int, interval: float = 0.0
) -> Uploads:
    """Upload ``items`` from ``clients`` threads (keep-alive), or one every ``interval`` s."""
    uploads = Uploads()
    lock = threading.Lock()
    todo = iter(range(len(items)))
    uploads.started = time.time()

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                number = next(todo, None)
            if number is None:
                break
            if interval:
                time.sleep(max(0.0, uploads.started + number * interval - time.time()))
            device, stamp, body = items[number]
            sent = time.time()
            try:
                connection.request(
                    "POST",
                    f"/collections/images?deviceId={device}&timestamp={stamp}",
                    body,
                    {"Content-Type": "image/png", "Accept": "application/json"},
                )
                response = connection.getresponse()
                answer = response.read()
            except OSError:
                connection.close()
                with lock:
                    uploads.errors += 1
                continue
            arrived = time.time()
            with lock:
                if response.status == 201:
                    uploads.answered[json.loads(answer)["id"]] = arrived
                    uploads.latencies.append(arrived - sent)
                else:
                    uploads.errors += 1
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(1 if interval else clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    uploads.ended = max(uploads.answered.values(), default=time.time())
    return uploads


# --- The service -----------------------------------------------------------------


class Service:
    """A fresh ``serve`` on a fresh database; with ``receivers``, 10 webhooks and MQTT."""

    def __init__(self, tmp: Path, database_url: str, workers: int, broker: int | None) -> None:
        self.database_url = database_url
        extra = {"IMAGES_MQTT": f"mqtt://127.0.0.1:{broker}/{PREFIX}"} if broker else {}
        self.env = serve_env(database_url, **extra)
        self.port = free_port()
        self.log = tmp / "serve.log"
        options = ("--coap-port", "0", "--optimizers", "0", "--deliverers", "1")
        # The listener's port named: the default, HTTP's + 1, may be taken on a shared box.
        events = ("--events-port", str(free_port()))
        try:
            self.process = start_serve(
                self.log, self.env, self.port, workers, *options, *events, new_session=True
            )
        except RuntimeError:
            sys.stderr.write(self.log.read_text(errors="replace")[-3000:])
            raise
        self.webhooks: list[int] = []

    def add_webhooks(self, urls: list[str]) -> None:
        for url in urls:
            done = subprocess.run(
                [sys.executable, "manage.py", "webhook", "add", url],
                cwd=ROOT,
                env=self.env,
                capture_output=True,
                text=True,
                check=True,
            )
            self.webhooks.append(int(done.stdout.split(":")[0].removeprefix("webhook ")))

    def wait_leased(self, count: int, timeout: float = 60.0) -> None:
        """Until the deliverer holds ``count`` receivers (it claims them within a second)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            [(held,)] = query_database(
                self.database_url, "SELECT count(*) FROM images_receiver WHERE lease_holder <> ''"
            )
            if held >= count:
                # Each HTTP worker asks "is anyone receiving?" at most once a second.
                time.sleep(1.2)
                return
            time.sleep(0.2)
        raise RuntimeError(f"the deliverer did not take {count} receivers in {timeout} s")

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of serve's processes by role (granian's masters included)."""
        found: dict[str, float] = defaultdict(float)
        for pid in [self.process.pid, *descendants(self.process.pid)]:
            command = cmdline(pid)
            role = next((role for role, mark in ROLES.items() if mark in command), "other")
            found[role] += process_cpu(pid)
        return found

    def renice(self, role: str, nice: int) -> None:
        """Every thread of serve's processes of ``role`` to ``nice`` (Linux: nice is per thread)."""
        for pid in descendants(self.process.pid):
            if ROLES[role] in cmdline(pid):
                for task in Path(f"/proc/{pid}/task").iterdir():
                    # Back from the idle class serve starts it in, then niced.
                    os.sched_setscheduler(int(task.name), os.SCHED_OTHER, os.sched_param(0))
                    os.setpriority(os.PRIO_PROCESS, int(task.name), nice)

    def backlog(self) -> dict[str, float]:
        """``images_delivery_backlog`` by kind, from /metrics."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=30) as response:
            text = response.read().decode()
        pattern = r'^images_delivery_backlog\{kind="(\w+)"\} ([\d.e+]+)$'
        return {kind: float(value) for kind, value in re.findall(pattern, text, re.M)}

    def receiver_state(self, key: int) -> tuple[int, float | None, str]:
        """Attempts in a row, seconds until the next attempt is due, and the last error."""
        [(attempts, retry_at, error)] = query_database(
            self.database_url,
            "SELECT attempts, retry_at, last_error FROM images_receiver WHERE id = ?",
            (key,),
        )
        if retry_at is None:
            return attempts, None, error
        if isinstance(retry_at, str):  # SQLite: UTC as text
            retry_at = datetime.fromisoformat(retry_at)
        if retry_at.tzinfo is None:
            retry_at = retry_at.replace(tzinfo=UTC)
        return attempts, (retry_at - datetime.now(UTC)).total_seconds(), error

    def problems(self) -> dict[str, int]:
        """The log's warnings and errors, by kind (``database is locked`` apart)."""
        found: dict[str, int] = defaultdict(int)
        for line in self.log.read_text(errors="replace").splitlines():
            if "Python threads" in line:  # granian's note on --blocking-threads
                continue
            if "locked" in line:
                found["database is locked"] += 1
            elif re.search(r"Traceback|ERROR|WARNING|exited", line):
                found[re.sub(r"^[\d\-: ,.]+", "", line)[:100]] += 1
        return found

    def stop(self) -> None:
        stop(self.process, timeout=60)


def box_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    fields = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields) - idle) / tick, sum(fields) / tick


@contextmanager
def idle_spinners() -> Iterator[None]:
    """A busy loop per core in the idle scheduling class, for as long as the block runs.

    The control for what any idle-class work costs uploads on this machine,
    with nothing of the deliverer's in it (``bench/deliveries.py --also-spin``).
    """
    code = (
        "import os\n"
        "os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\n"
        "while True:\n    pass\n"
    )
    spinners = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(os.cpu_count() or 1)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
