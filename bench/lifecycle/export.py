"""Part 1 of ``python -m bench.lifecycle``: exporting one device, over HTTP and by command."""

from __future__ import annotations

import http.client
import subprocess
import time
from pathlib import Path

from bench.lifecycle.fill import fill
from bench.lifecycle.processes import (
    granian_worker,
    manage_measured,
    rss_sampler,
    serve_env,
    serving,
)
from bench.support import rss_mib

EXPORT_DEVICE = "cam-export"
EXPORT_SIDES = (128, 160, 192, 224, 256)  # grey noise: 16 to 65 KB each
MiB = 1024 * 1024


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
        idle = rss_mib(worker)
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
