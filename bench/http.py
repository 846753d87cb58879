"""HTTP benchmarks against a live ``manage.py serve`` on loopback (prints figures).

    python bench/http.py [--seconds 10] [--workers 2] [--rows 1000000]
        [--only ingest|download|archived|lookup|rss ...]

Uses wrk (Debian package ``wrk``) as the load generator. The database is a
fresh SQLite file, or, when DATABASE_URL names PostgreSQL, a throwaway
database on that server. Measures, each at concurrency 1 and 4:

- ingest of ``skimage__brick.png`` (106 KB PNG), unique keys per request;
- ingest of ``sklearn__china.jpg`` (197 KB JPEG), unique keys per request;
- download of a stored image by id, and 304 revalidation of it;

then the lookup latency (by device and time) with 100 and with ``--rows``
stored rows, and the peak RSS of the worker processes while a 30 MB image is
uploaded. Nothing here asserts; it prints.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named http.py, as the issue asks; Python puts its directory
# first on sys.path, where it would shadow the standard library's ``http``.
ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402

from bench.support import (  # noqa: E402
    CORPUS,
    INGEST_LUA,
    cmdline,
    database_kind,
    descendants,
    free_port,
    fresh_database,
    noise_png_of_size,
    print_wrk,
    query_database,
    reset_peak,
    rss_mib,
    serve_env,
    start_serve,
    stop,
    wrk,
)


class Server:
    def __init__(self, workers: int, database_url: str, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = start_serve(
            tmp / "serve.log",
            serve_env(database_url),
            self.port,
            workers,
            *("--coap-port", "0"),
            new_session=True,
        )

    def upload(self, data: bytes, content_type: str, device: str, timestamp: str) -> dict:
        request = urllib.request.Request(
            f"{self.url}/collections/images?deviceId={device}&timestamp={timestamp}",
            data=data,
            method="POST",
            headers={"Content-Type": content_type, "Accept": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=300) as response:
            return json.loads(response.read())

    def worker_pids(self) -> list[int]:
        """Every process under serve: granian's and its workers, the optimizer."""
        return descendants(self.process.pid)

    def stop(self) -> None:
        stop(self.process, timeout=60)


def populate(database_url: str, start: int, stop: int) -> None:
    """Rows ``start`` to ``stop`` of device ``lookup`` (tiny blobs), straight into the table.

    Row ``i`` is stamped ``2000-01-01T00:00:00Z`` plus ``i`` microseconds.
    """
    if database_url.startswith("sqlite:///"):
        import sqlite3

        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as db:
            db.executemany(
                "INSERT INTO images_image (id, device_id, timestamp, content_type, width, height,"
                " original_size, stored_size, sha256, original_sha256, received_at, modified_at,"
                " optimized, attempts, location, data, at_rest_size, at_rest_form,"
                " compact_pending, failure) VALUES (?, 'lookup', ?, 'image/png', 1, 1,"
                " 1, 1, '', '', '2024-01-01 00:00:00', '2024-01-01 00:00:00', 1, 0, '', x'00',"
                " 1, '', 0, '')",
                (
                    (f"{i:032x}", f"2000-01-01 00:00:{i // 1_000_000:02d}.{i % 1_000_000:06d}")
                    for i in range(start, stop)
                ),
            )
        return
    query_database(
        database_url,
        "INSERT INTO images_image (id, device_id, timestamp, content_type, width, height,"
        " original_size, stored_size, sha256, original_sha256, received_at, modified_at,"
        " optimized, attempts, location, data, at_rest_size, at_rest_form, compact_pending,"
        " failure) SELECT md5(i::text)::uuid, 'lookup',"
        " timestamp '2000-01-01' + i * interval '1 microsecond', 'image/png', 1, 1, 1, 1,"
        " '', '', now(), now(), true, 0, '', '\\x00'::bytea, 1, '', false, ''"
        " FROM generate_series(%s, %s - 1) AS i",
        (start, stop),
    )


def download(server: Server, database_url: str, seconds: int) -> None:
    stored = server.upload(
        (CORPUS / "skimage__brick.png").read_bytes(), "image/png", "dl", "2024-01-01T00:00:00Z"
    )
    drain_optimizer(database_url, report=False)
    meta = urllib.request.Request(
        f"{server.url}{stored['href']}", headers={"Accept": "application/json"}
    )
    stored = json.loads(urllib.request.urlopen(meta, timeout=60).read())
    item = f"{server.url}{stored['href']}"
    for connections in (1, 4):
        print_wrk(f"download by id, c{connections}", wrk(item, seconds, connections))
    etag = f'If-None-Match: "{stored["sha256"]}"'
    for connections in (1, 4):
        print_wrk(f"304 revalidation, c{connections}", wrk(item, seconds, connections, "-H", etag))


def archived(server: Server, database_url: str, seconds: int) -> None:
    """Downloads of JPEGs held as JPEG XL (API.md §12): recent (cached) and cold (rebuilt).

    Recent: one image, fetched again and again (rebuilt once, then served from
    the worker's cache of rebuilt images). Cold: 30 different 1 MB JPEGs, each
    fetched once, so every answer is a rebuild.
    """
    china = (CORPUS / "sklearn__china.jpg").read_bytes()
    stored = server.upload(china, "image/jpeg", "jxl", "2024-01-01T00:00:00Z")
    cold = [
        server.upload(photo_jpeg(index), "image/jpeg", "jxl-cold", f"2024-01-02T00:00:{index:02d}Z")
        for index in range(30)
    ]
    drain_optimizer(database_url, report=False)
    [(held, served)] = query_database(
        database_url,
        "SELECT SUM(at_rest_size), SUM(stored_size) FROM images_image WHERE device_id LIKE 'jxl%'",
    )
    print(f"archived JPEGs held at {held / served:.4f} of the bytes served")
    item = f"{server.url}{stored['href']}"
    for connections in (1, 4):
        print_wrk(
            f"download archived JPEG, recent, c{connections}", wrk(item, seconds, connections)
        )
    times = []
    for meta in cold:
        started = time.perf_counter()
        with urllib.request.urlopen(f"{server.url}{meta['href']}", timeout=60) as response:
            body = response.read()
        times.append((time.perf_counter() - started) * 1000)
        assert len(body) == meta["storedSize"]
    times.sort()
    size = sum(meta["storedSize"] for meta in cold) / len(cold) / 1e6
    print(
        f"download archived JPEG, cold ({size:.2f} MB, each rebuilt): "
        f"p50 {times[len(times) // 2]:.1f} ms, max {times[-1]:.1f} ms over {len(times)}",
        flush=True,
    )


def photo_jpeg(seed: int) -> bytes:
    """A JPEG of about 1 MB: 1400 x 1050 pixels of noise at quality 80."""
    from PIL import Image

    pixels = random.Random(seed).randbytes(1400 * 1050 * 3)
    out = io.BytesIO()
    Image.frombytes("RGB", (1400, 1050), pixels).save(out, "JPEG", quality=80)
    return out.getvalue()


def drain_optimizer(database_url: str, *, report: bool = True) -> None:
    """Wait for the deferred optimizer, then print what ended up stored for the ingest runs."""
    started = time.perf_counter()
    pending_sql = "SELECT COUNT(*) FROM images_image WHERE NOT optimized"
    [(pending,)] = query_database(database_url, pending_sql)
    while pending:
        time.sleep(0.5)
        [(pending,)] = query_database(database_url, pending_sql)
    if not report:
        return
    [(count, original, stored)] = query_database(
        database_url, "SELECT COUNT(*), SUM(original_size), SUM(stored_size) FROM images_image"
    )
    print(
        f"deferred optimizer finished {time.perf_counter() - started:.1f} s after the ingest runs;"
        f" {count} images stored at {stored / original:.4f} of their original bytes"
    )


def lookup_url(server: Server, index: int) -> str:
    return (
        f"{server.url}/collections/images?deviceId=lookup"
        f"&timestamp=2000-01-01T00%3A00%3A00.{index:06d}Z"
    )


def peak_rss(server: Server, database_url: str) -> None:
    """Each process's peak RSS while a 30 MB PNG is uploaded, then while it is optimized.

    The peak is the kernel's high-water mark (VmHWM), reset just before, so
    no short peak is missed; where resetting is not allowed, RSS is sampled
    every 5 ms instead.
    """
    image = noise_png_of_size(30_000_000, seed=1, compress_level=1)
    pids = server.worker_pids()
    idle = {pid: rss_mib(pid) for pid in pids}
    exact = all(reset_peak(pid) for pid in pids)
    sampled = dict(idle)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for pid in sampled:
                sampled[pid] = max(sampled[pid], rss_mib(pid))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.perf_counter()
    server.upload(image, "image/png", "rss", "2024-01-01T00:00:00Z")
    elapsed = time.perf_counter() - started
    done.set()
    sampler.join()
    peak = {pid: rss_mib(pid, "VmHWM") if exact else sampled[pid] for pid in pids}
    worst = max(pids, key=lambda pid: peak[pid] - idle[pid])
    how = "high-water mark" if exact else "sampled"
    print(
        f"30 MB upload ({len(image) / 1e6:.1f} MB PNG) in {elapsed:.2f} s: worker peak RSS"
        f" {peak[worst]:.0f} MiB ({how}; idle {idle[worst]:.0f} MiB, growth"
        f" {peak[worst] - idle[worst]:.0f} MiB; {peak[worst] * 2**20 / len(image):.1f}x"
        " the image)"
    )
    # The deferred optimizer (a separate, low-priority process) then decodes
    # and recompresses it: report that process too.
    optimizer = [pid for pid in pids if pid != worst and "optimize" in cmdline(pid)]
    drain_optimizer(database_url, report=False)
    for pid in optimizer:
        print(f"  optimizer process peak RSS {rss_mib(pid, 'VmHWM'):.0f} MiB while optimizing it")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--only",
        choices=["ingest", "download", "archived", "lookup", "rss"],
        action="append",
        help="run only these parts (repeatable); default: all",
    )
    args = parser.parse_args()
    parts = set(args.only or ["ingest", "download", "archived", "lookup", "rss"])
    if shutil.which("wrk") is None:
        sys.exit("bench/http.py needs wrk: apt-get install wrk")

    tmp = Path(tempfile.mkdtemp(prefix="bench-http-"))
    with fresh_database(tmp) as database_url:
        run(args, parts, tmp, database_url)


def run(args: argparse.Namespace, parts: set[str], tmp: Path, database_url: str) -> None:
    """The ``parts`` asked for, against one ``serve`` on ``database_url``."""
    kind = database_kind(database_url)
    print(
        f"database: {kind}; server: manage.py serve, {args.workers} workers; {os.cpu_count()} cores"
    )
    server = Server(args.workers, database_url, tmp)
    try:
        for name, file, content_type in (
            []
            if "ingest" not in parts
            else [
                ("brick PNG", CORPUS / "skimage__brick.png", "image/png"),
                ("china JPEG", CORPUS / "sklearn__china.jpg", "image/jpeg"),
            ]
        ):
            for connections in (1, 4):
                script = tmp / f"ingest-{content_type.replace('/', '-')}-{connections}.lua"
                script.write_text(
                    INGEST_LUA.format(
                        file=file,
                        prefix=f"{file.stem}-c{connections}",
                        content_type=content_type,
                    )
                )
                figures = wrk(server.url, args.seconds, connections, "-s", str(script))
                print_wrk(
                    f"ingest {name} ({file.stat().st_size // 1000} KB), c{connections}", figures
                )

        if "ingest" in parts:
            drain_optimizer(database_url)

        if "download" in parts:
            download(server, database_url, args.seconds)

        if "archived" in parts:
            archived(server, database_url, args.seconds)

        if "lookup" in parts:
            populate(database_url, 0, 100)
            url = lookup_url(server, 50)
            print_wrk("lookup by device+time, 100 rows, c1", wrk(url, args.seconds, 1))
            populate(database_url, 100, args.rows)
            print_wrk(f"lookup by device+time, {args.rows:,} rows, c1", wrk(url, args.seconds, 1))

        if "rss" in parts:
            peak_rss(server, database_url)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
