"""An image's end of life at scale: exporting a device, pruning under load (prints figures).

    python bench/lifecycle.py [--rows 100000] [--rate 20] [--quiet 30] [--only export|prune]

Each part fills a fresh database (SQLite, or PostgreSQL when DATABASE_URL
names it) fast, in a setup subprocess: a handful of noise PNGs go through
``image_ingest``, then their rows are copied with new ids, keys and times.

1. Export: ``--rows / 10`` images of one device (PNGs of 16 to 65 KB), fetched
   from ``manage.py serve --workers 1`` while the granian worker's VmRSS is
   sampled every 10 ms (its VmHWM is reset first through /proc/PID/clear_refs
   and read after); then written by ``manage.py exportimages`` (peak RSS:
   ru_maxrss from wait4); a copy of that file and a ``dd`` of its size for
   the disk's speed; and a slow reader that hangs up early, then how long
   the next request waits.
2. Prune: ``--rows`` images of 300 devices received over the past 60 days;
   uploads (unique keys, 1 KB PNGs) go open-loop at ``--rate`` to ``serve``
   throughout, and ``manage.py prune`` runs with IMAGES_RETENTION_DAYS=30
   (about half goes; its time includes its start-up). Upload latency counts
   from when each upload was due, so a queue behind a slow one shows; it is
   printed for ``--quiet`` seconds before, during, and as long after, with
   the share of each window in which some task waited for a CPU, or for I/O
   (PSI: the machine may be shared).

Nothing here asserts.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)

import argparse  # noqa: E402
import http.client  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import queue  # noqa: E402
import random  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402

from PIL import Image as PILImage  # noqa: E402

from bench.support import free_port, fresh_database, query_database, stop, wait_for_port  # noqa: E402

EXPORT_DEVICE = "cam-export"
EXPORT_SIDES = (128, 160, 192, 224, 256)  # grey noise: 16 to 65 KB each
PRUNE_DEVICES = 300
PRUNE_DAYS = 60
RETENTION_DAYS = 30
MiB = 1024 * 1024


def noise_png(side: int, seed: int) -> bytes:
    pixels = random.Random(seed).randbytes(side * side)
    out = io.BytesIO()
    PILImage.frombytes("L", (side, side), pixels).save(out, "PNG")
    return out.getvalue()


# --- Filling a database (runs in a subprocess: Django set up on its URL) ------


def populate(spec: dict) -> None:
    """``spec["count"]`` images cycling through ingested noise PNGs of ``spec["sides"]``."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from images.models import Image
    from images.services import image_ingest

    call_command("migrate", interactive=False, verbosity=0)
    now = datetime.now(UTC)
    templates = []
    for n, side in enumerate(spec["sides"]):
        stamp = now - timedelta(days=PRUNE_DAYS + 1, seconds=n)
        made = image_ingest(device_id="template", timestamp=stamp, data=noise_png(side, n))
        image = Image.objects.get(id=made.image.id)
        # Every column, so that rows stay whole whatever the model grows.
        fields = {f.attname: getattr(image, f.attname) for f in Image._meta.concrete_fields}
        templates.append({**fields, "data": bytes(fields["data"])})
    Image.objects.filter(device_id="template").delete()
    count, devices, days = spec["count"], spec["devices"], spec["days"]
    span = timedelta(days=days) if days else timedelta(seconds=count)
    batch: list[Image] = []
    for i in range(count):
        received = now - span * (count - i) / count
        device = spec["device"] if devices == 1 else f"dev-{i % devices:03d}"
        row = {**templates[i % len(templates)], "id": uuid.uuid4(), "device_id": device}
        row.update(timestamp=received - timedelta(seconds=1), received_at=received)
        row.update(modified_at=received, optimized=True, lease_until=None, attempts=0)
        batch.append(Image(**row))
        if len(batch) == 2000 or i == count - 1:
            Image.objects.bulk_create(batch, batch_size=500)
            batch = []
    if connection.vendor == "postgresql":
        # A table filled over 60 days would have been analysed by now.
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE images_image")


def fill(url: str, **spec: object) -> float:
    """Run :func:`populate` on ``url`` in a subprocess; its seconds."""
    start = time.monotonic()
    env = {**os.environ, "DATABASE_URL": url, "SECRET_KEY": "x"}
    command = [sys.executable, __file__, "--populate", json.dumps(spec)]
    subprocess.run(command, cwd=ROOT, env=env, check=True, timeout=1800)
    # Written out now, so that what follows is not measured against its write-back.
    os.sync()
    return time.monotonic() - start


# --- Processes ------------------------------------------------------------------


def serve_env(url: str) -> dict[str, str]:
    # serve prunes by itself when retention is on: here only the measured prune does.
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGES_RETENTION_")}
    env.update(DATABASE_URL=url, SECRET_KEY="x", ALLOWED_HOSTS="127.0.0.1")
    return {**env, "REQUEST_LOG_LEVEL": "WARNING"}


@contextmanager
def serving(directory: Path, url: str) -> Iterator[tuple[int, subprocess.Popen]]:
    """``manage.py serve --workers 1`` on a free port; its port and process, stopped on exit."""
    port = free_port()
    command = [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with open(directory / "serve.log", "ab") as log:
        server = subprocess.Popen(
            [*command, "--coap-port", "0", "--workers", "1"],
            cwd=ROOT,
            env=serve_env(url),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, server, timeout=120)
        yield port, server
    finally:
        stop(server, timeout=40)


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # it exited meanwhile
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def granian_worker(server: subprocess.Popen) -> int:
    """serve -> granian's master -> its one worker (the process that runs the app)."""
    for child in children(server.pid):
        if b"granian" in Path(f"/proc/{child}/cmdline").read_bytes():
            workers = children(child)
            if len(workers) == 1:
                return workers[0]
    raise RuntimeError("no single granian worker under serve")


def status_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for {pid}")


@contextmanager
def rss_sampler(pid: int) -> Iterator[dict[str, float]]:
    """The peak VmRSS of ``pid`` (every 10 ms) and its VmHWM, reset at the start when allowed."""
    figures = {"peak": status_mib(pid, "VmRSS"), "hwm": float("nan")}
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # 5: reset the peak RSS (proc(5))
        reset = True
    except OSError:
        reset = False
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            figures["peak"] = max(figures["peak"], status_mib(pid, "VmRSS"))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield figures
    finally:
        done.set()
        thread.join()
        if reset:
            figures["hwm"] = status_mib(pid, "VmHWM")


def manage_measured(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run ``manage.py args``; its seconds and peak RSS in MiB (ru_maxrss from wait4)."""
    start = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL
    )
    try:
        while time.monotonic() - start < 1800:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                process.returncode = os.waitstatus_to_exitcode(status)
                if process.returncode:
                    raise RuntimeError(f"manage.py {args[0]} exited with {process.returncode}")
                return time.monotonic() - start, usage.ru_maxrss / 1024
            time.sleep(0.02)
        raise RuntimeError(f"manage.py {args[0]} ran for more than 30 minutes")
    finally:
        if process.returncode is None:
            stop(process)


# --- 1. Export ----------------------------------------------------------------------


def download(port: int, path: str, deadline: float, rate: float = 0.0) -> int:
    """GET ``path`` and drop the body; its bytes. With ``rate`` (bytes/s), read that slowly."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status}")
        total, start, piece = 0, time.monotonic(), 1 << 20 if not rate else 1 << 16
        while time.monotonic() < deadline and (data := response.read(piece)):
            total += len(data)
            if rate:
                time.sleep(max(0.0, start + total / rate - time.monotonic()))
        return total
    finally:
        connection.close()


def bench_export(tmp: Path, url: str, count: int) -> None:
    seconds = fill(url, count=count, devices=1, days=0, sides=EXPORT_SIDES, device=EXPORT_DEVICE)
    print(f"export: {count:,} images of one device (filled in {seconds:.0f} s)", flush=True)
    path = f"/devices/{EXPORT_DEVICE}/export"
    with serving(tmp, url) as (port, server):
        worker = granian_worker(server)
        download(port, path + "?to=2000-01-01T00:00:00Z", time.monotonic() + 60)  # warm-up
        download(port, "/devices", time.monotonic() + 60)
        idle = status_mib(worker, "VmRSS")
        with rss_sampler(worker) as rss:
            start = time.monotonic()
            size = download(port, path, start + 1800)
            took = time.monotonic() - start
        print(
            f"  GET {path}: {size / 1e6:,.1f} MB in {took:.1f} s, {size / 1e6 / took:.1f} MB/s\n"
            f"  granian worker RSS: idle {idle:.1f} MiB, peak {rss['peak']:.1f} MiB "
            f"(+{rss['peak'] - idle:.1f}), VmHWM since reset {rss['hwm']:.1f} MiB",
            flush=True,
        )
        # A reader slower than the database: does the worker hold what it cannot send?
        slow_rate, slow_seconds = 1 << 20, 10.0
        with rss_sampler(worker) as rss:
            start = time.monotonic()
            got = download(port, path, start + slow_seconds, rate=slow_rate)
        start = time.monotonic()
        download(port, "/devices", start + 600)
        after = time.monotonic() - start
        print(
            f"  slow reader ({slow_rate / MiB:.0f} MiB/s, hangs up after {slow_seconds:.0f} s, "
            f"{got / 1e6:.1f} MB read): worker peak {rss['peak']:.1f} MiB "
            f"(+{rss['peak'] - idle:.1f}); the next request waited {after:.2f} s",
            flush=True,
        )
    target = tmp / "export.tar"
    env = serve_env(url)
    took, peak = manage_measured(["exportimages", "--device", EXPORT_DEVICE, str(target)], env)
    size = target.stat().st_size
    # The same command for an empty range: Django's start-up alone.
    empty = ["exportimages", "--device", EXPORT_DEVICE, "--to", "2000-01-01T00:00:00Z"]
    startup, idle_peak = manage_measured([*empty, str(tmp / "empty.tar")], env)
    print(
        f"  manage.py exportimages: {size / 1e6:,.1f} MB in {took:.1f} s, "
        f"{size / 1e6 / (took - startup):.1f} MB/s after its start-up ({startup:.1f} s); "
        f"peak RSS {peak:.1f} MiB (for an empty range: {idle_peak:.1f} MiB)",
        flush=True,
    )
    start = time.monotonic()
    with target.open("rb") as source, (tmp / "copy.tar").open("wb") as copy:
        while piece := source.read(MiB):  # not copy_file_range: that may only share extents
            copy.write(piece)
    copied = time.monotonic() - start
    start = time.monotonic()
    dd = ["dd", "if=/dev/zero", f"of={tmp / 'dd.bin'}", "bs=1M", f"count={size // MiB + 1}"]
    subprocess.run([*dd, "conv=fdatasync"], check=True, capture_output=True, timeout=600)
    written = time.monotonic() - start
    print(
        f"  disk reference, {size / 1e6:,.1f} MB: a python copy of the archive in 1 MiB pieces "
        f"{copied:.2f} s ({size / 1e6 / copied:,.0f} MB/s); dd write + fdatasync "
        f"{written:.2f} s ({size / 1e6 / written:,.0f} MB/s)",
        flush=True,
    )
    for name in ("export.tar", "empty.tar", "copy.tar", "dd.bin"):
        (tmp / name).unlink(missing_ok=True)


# --- 2. Prune under upload load ------------------------------------------------


class Uploads:
    """Open-loop uploads, unique keys: upload n is due at start + n / rate (for ``limit`` s)."""

    CLIENTS = 8
    FIRST = datetime(2030, 1, 1, tzinfo=UTC)

    def __init__(self, port: int, rate: float, limit: float) -> None:
        # (when it was due, seconds from then to its answer, status; 0: no answer)
        self.samples: list[tuple[float, float, int]] = []
        self._bodies = [noise_png(32, seed) for seed in range(20)]
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


def run_prune(url: str, timeout: float) -> int:
    """``manage.py prune`` with IMAGES_RETENTION_DAYS set; how many images it says it deleted."""
    env = {**serve_env(url), "IMAGES_RETENTION_DAYS": str(RETENTION_DAYS)}
    command = [sys.executable, "manage.py", "prune", "--verbosity", "0"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        out, _ = process.communicate(timeout=timeout)
    finally:
        if process.returncode is None:
            stop(process)
    if process.returncode:
        raise RuntimeError(f"prune exited with {process.returncode}")
    return int(out.split()[-2])  # "deleted N images"


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
            deleted = run_prune(url, timeout=3600)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="prune rows; export: a tenth")
    parser.add_argument("--rate", type=float, default=20.0, help="uploads per second")
    parser.add_argument("--quiet", type=float, default=30.0, help="seconds before the prune")
    parser.add_argument("--only", choices=("export", "prune"))
    parser.add_argument("--populate", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.populate:
        populate(json.loads(args.populate))
        return
    database = "PostgreSQL" if "postgres" in os.environ.get("DATABASE_URL", "") else "SQLite"
    print(
        f"database {database}; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} "
        "at the start; serve with 1 HTTP worker",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench-lifecycle-") as tmp:
        for part in ("export", "prune"):
            if args.only not in (None, part):
                continue
            directory = Path(tmp) / part
            directory.mkdir()
            with fresh_database(directory) as url:
                if part == "export":
                    bench_export(directory, url, max(args.rows // 10, 1))
                else:
                    bench_prune(directory, url, args.rows, args.rate, args.quiet)


if __name__ == "__main__":
    main()
