"""Parts 2 and 3 of ``python -m bench.lifecycle``: ``manage.py prune`` under an open-loop
upload load, and ``prune`` with per-device policies over a fleet of 10,000 devices."""

from __future__ import annotations

import http.client
import os
import queue
import re
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.lifecycle.fill import PRUNE_DAYS, fill
from bench.lifecycle.processes import serve_env, serving
from bench.support import ROOT, noise_png, query_database, stop

PRUNE_DEVICES = 300
RETENTION_DAYS = 30
POLICY_DEVICES = 10_000
# (pattern, options): a family bounded by bytes, one by count, one kept
# for ever, one device by age (IMAGES_RETENTION_DAYS governs the rest).
POLICIES = (
    ("dev-1*", ("--max-bytes", "{device_bytes}")),
    ("dev-2*", ("--max-images", "3")),
    ("dev-3*", ("--retention-days", "off", "--max-images", "off")),
    ("dev-042", ("--retention-days", "7")),
)


class Uploads:
    """Open-loop uploads, unique keys: upload n is due at start + n / rate (for ``limit`` s)."""

    CLIENTS = 8
    FIRST = datetime(2030, 1, 1, tzinfo=UTC)

    def __init__(self, port: int, rate: float, limit: float) -> None:
        # (when it was due, seconds from then to its answer, status; 0: no answer)
        self.samples: list[tuple[float, float, int]] = []
        self._bodies = [noise_png(32, seed, mode="L") for seed in range(20)]
        self._halt = threading.Event()
        self._due: queue.Queue[tuple[int, float] | None] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._client, args=(port,)) for _ in range(self.CLIENTS)
        ]
        self._threads.append(threading.Thread(target=self._offer, args=(rate, limit)))
        for thread in self._threads:
            thread.start()

    def _offer(self, rate: float, limit: float) -> None:
        start = time.monotonic()
        for n in range(int(rate * limit)):
            due = start + n / rate
            if self._halt.wait(max(0.0, due - time.monotonic())):
                break
            self._due.put((n, due))
        for _ in range(self.CLIENTS):
            self._due.put(None)

    def _client(self, port: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while (item := self._due.get()) is not None:
            n, due = item
            stamp = (self.FIRST + timedelta(seconds=n)).strftime("%Y-%m-%dT%H:%M:%SZ")
            path = f"/collections/images?deviceId=live-{n % 20}&timestamp={stamp}"
            try:
                connection.request(
                    "POST", path, self._bodies[n % 20], {"Content-Type": "image/png"}
                )
                response = connection.getresponse()
                response.read()
                status = response.status
            except OSError:
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                status = 0
            self.samples.append((due, time.monotonic() - due, status))
        connection.close()

    def stop(self) -> None:
        self._halt.set()
        for thread in self._threads:
            thread.join(timeout=90)

    def window(self, start: tuple[float, ...], end: tuple[float, ...]) -> str:
        """Figures of the uploads due between two :func:`mark` s, as one table row."""
        rows = [(took, status) for due, took, status in self.samples if start[0] <= due < end[0]]
        took = sorted(seconds * 1000 for seconds, _ in rows)
        errors = sum(status != 201 for _, status in rows)
        if not took:
            return "no uploads"

        def pct(q: float) -> float:
            return took[min(len(took) - 1, int(q * len(took)))]

        slow = sum(ms > 1000 for ms in took)
        cpu, io = ((end[i] - start[i]) / (end[0] - start[0]) * 100 for i in (1, 2))
        return (
            f"{len(took):7d} {errors:6d} {pct(0.5):7.1f} {pct(0.9):7.1f} {pct(0.99):7.1f} "
            f"{took[-1]:8.1f} {slow:5d} {cpu:7.0f}% {io:6.0f}%"
        )


def mark() -> tuple[float, float, float]:
    """Now, and the seconds so far that some task waited for a CPU, and for I/O (Linux PSI).

    The machine may be shared: those waits, over a window, say how much of
    the latency may be someone else's load. NaN where PSI is missing.
    """
    waits = []
    for resource in ("cpu", "io"):
        try:
            some = Path(f"/proc/pressure/{resource}").read_text().splitlines()[0]
            waits.append(int(some.rsplit("total=", 1)[1]) / 1e6)
        except OSError:
            waits.append(float("nan"))
    return time.monotonic(), waits[0], waits[1]


def run_prune(url: str, timeout: float, *options: str, **settings: str) -> str:
    """``manage.py prune *options`` with IMAGES_RETENTION_DAYS and ``settings``; its output."""
    env = {**serve_env(url), "IMAGES_RETENTION_DAYS": str(RETENTION_DAYS), **settings}
    command = [sys.executable, "manage.py", "prune", *options]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        out, _ = process.communicate(timeout=timeout)
    finally:
        if process.returncode is None:
            stop(process)
    if process.returncode:
        raise RuntimeError(f"prune exited with {process.returncode}")
    return out


def pruned(out: str) -> int:
    """How many images a prune's last line says it deleted (or would)."""
    match = re.fullmatch(r"(?:would delete|deleted) ([\d,]+) images?, .*", out.splitlines()[-1])
    if match is None:
        raise RuntimeError(f"prune said {out!r}")
    return int(match[1].replace(",", ""))


def bench_prune(tmp: Path, url: str, rows: int, rate: float, quiet: float) -> None:
    sides = (40, 44, 48, 52, 56)
    seconds = fill(url, count=rows, devices=PRUNE_DEVICES, days=PRUNE_DAYS, sides=sides)
    print(
        f"prune: {rows:,} images of {PRUNE_DEVICES} devices received over {PRUNE_DAYS} days "
        f"(filled in {seconds:.0f} s); uploads at {rate:g}/s, 1 KB PNGs; "
        f"load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    with serving(tmp, url) as (port, _):
        uploads = Uploads(port, rate, limit=3 + quiet + 2 * 3600)
        try:
            time.sleep(3)  # past the worker's first requests (imports, connections)
            quiet_start = mark()
            time.sleep(quiet)
            prune_start = mark()
            deleted = pruned(run_prune(url, 3600, "--verbosity", "0"))
            prune_end = mark()
            took = prune_end[0] - prune_start[0]
            time.sleep(took)
            after_end = mark()
        finally:
            uploads.stop()
    left = query_database(url, "SELECT count(*) FROM images_image")[0][0]
    print(
        f"  manage.py prune (IMAGES_RETENTION_DAYS={RETENTION_DAYS}): deleted {deleted:,} in "
        f"{took:.1f} s ({deleted / took:,.0f}/s); {left:,} images left (uploads included)\n"
        f"  {'upload latency (ms)':<28} {'uploads':>7} {'errors':>6} {'p50':>7} {'p90':>7} "
        f"{'p99':>7} {'max':>8} {'>1 s':>5} {'cpu wait':>8} {'io wait':>7}\n"
        f"  {f'before the prune ({quiet:.0f} s)':<28} {uploads.window(quiet_start, prune_start)}\n"
        f"  {f'during the prune ({took:.0f} s)':<28} {uploads.window(prune_start, prune_end)}\n"
        f"  {'after it (as long)':<28} {uploads.window(prune_end, after_end)}",
        flush=True,
    )


def bench_policy(url: str, rows: int) -> None:
    """``prune --dry-run``, ``prune``, then ``prune`` again (the steady state of ``--watch``)
    with POLICIES, IMAGES_RETENTION_DAYS and IMAGES_RETENTION_MAX_BYTES, nothing else running."""
    sides = (40, 44, 48, 52, 56)
    seconds = fill(url, count=rows, devices=POLICY_DEVICES, days=PRUNE_DAYS, sides=sides)
    total = int(query_database(url, "SELECT sum(at_rest_size) FROM images_image")[0][0])
    device_bytes = str(total // POLICY_DEVICES // 2)
    applied = [
        (pattern, [o.replace("{device_bytes}", device_bytes) for o in options])
        for pattern, options in POLICIES
    ]
    for pattern, options in applied:
        command = [sys.executable, "manage.py", "policy", "set", pattern, *options]
        subprocess.run(command, cwd=ROOT, env=serve_env(url), check=True, capture_output=True)
    limit = str(total * 2 // 5)
    print(
        f"policy: {rows:,} images ({total:,} bytes at rest) of {POLICY_DEVICES:,} devices "
        f"received over {PRUNE_DAYS} days (filled in {seconds:.0f} s); policies "
        + ", ".join(f"{pattern} {' '.join(options)}" for pattern, options in applied)
        + f"; IMAGES_RETENTION_DAYS={RETENTION_DAYS}, IMAGES_RETENTION_MAX_BYTES={limit}",
        flush=True,
    )
    for label, options in (
        ("prune --dry-run", ("--dry-run",)),
        ("prune", ()),
        ("prune again", ()),
    ):
        start = time.monotonic()
        out = run_prune(url, 3600, *options, IMAGES_RETENTION_MAX_BYTES=limit)
        took = time.monotonic() - start
        sources = "; ".join(line for line in out.splitlines()[:-1])
        print(f"  {label:<16} {took:6.1f} s  {out.splitlines()[-1]}\n    {sources}", flush=True)
    left = query_database(url, "SELECT count(*), sum(at_rest_size) FROM images_image")[0]
    print(f"  left: {left[0]:,} images, {int(left[1] or 0):,} bytes (start-up included above)")
