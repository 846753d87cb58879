"""Sustained end-to-end ingest at a fixed offered rate, both backlogs watched (prints figures).

    python bench/sustained.py [--image PATH] [--rates 20 40 60] [--seconds 180]
        [--optimizers 2] [--s3]

For each offered rate and each number of background workers, a fresh
``manage.py serve --optimizers N`` (2 HTTP workers, deferred optimization) on
a fresh database (SQLite, or PostgreSQL when DATABASE_URL names it) and,
with ``--s3``, a bucket of a local SeaweedFS. Uploads of the image (unique
keys) are sent open-loop at the offered rate for ``--seconds``; ``/metrics``
is read every second. Then both backlogs are left to drain. Printed per run:

- accepted/s (201s over the run) and final/s: images whose served bytes were
  final (``optimized``) by the end of the run, per second of it: the
  end-to-end rate (API.md §14);
- the largest lag (age of the oldest waiting image) of each backlog,
  optimize and compact, during the run;
- how long the compact backlog took to drain afterwards;
- Σ ``atRestSize`` / Σ ``originalSize`` once drained;
- whether optimizing kept its lag bounded (at the end of the run, no image
  had waited longer than the lag bound to be optimized);
- e2e/s: accepted images over the run plus the time until every served byte
  was final (the optimize backlog empty): the end-to-end rate counted to the
  last final image;
- how many images the optimizer took at each effort: full, quick, and none
  (kept as received past the lag bound);
- the server's CPU per accepted image (``serve`` and every process under
  it), all work included, from the first upload until every served byte was
  final ("ms/final"), and until both backlogs were empty ("ms/all").

``--checkout PATH`` serves another checkout of this repository instead (to
compare a change with main, run for each).

Nothing here asserts.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)

import argparse  # noqa: E402
import http.client  # noqa: E402
import os  # noqa: E402
import queue  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

from bench.support import (  # noqa: E402
    CORPUS,
    database_kind,
    free_port,
    fresh_database,
    query_database,
    serve_env,
    start_serve,
    stop,
    tree_cpu,
)

LAG_BOUND = 60


@dataclass
class Run:
    rate: float
    optimizers: int
    accepted: int = 0
    errors: int = 0
    optimized_during: float = 0.0
    max_lag: float = 0.0
    max_compact_lag: float = 0.0
    backlog_at_end: float = 0.0
    compact_at_end: float = 0.0
    drain_seconds: float = 0.0
    # Until the optimize backlog was empty: every served byte final.
    final_drain_seconds: float = 0.0
    efforts: dict[str, float] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)

    lag_at_end: float = 0.0
    cpu_final: float = 0.0  # the server's CPU seconds until every served byte was final
    cpu_all: float = 0.0  # ... until both backlogs were empty

    def e2e_rate(self, offer_seconds: float) -> float:
        """Accepted images per second, counted until the last served byte was final."""
        return self.accepted / (offer_seconds + self.final_drain_seconds)

    def cpu_ms(self, cpu_seconds: float) -> float:
        """``cpu_seconds`` of the server per accepted image, in ms."""
        return cpu_seconds * 1000 / max(self.accepted, 1)

    @property
    def bounded(self) -> bool:
        """Whether the optimizer kept up: at the end, nothing had waited longer than the bound."""
        return self.lag_at_end <= LAG_BOUND


def metrics(base: str, database_url: str) -> dict[str, float]:
    """Both backlogs and their lags from /metrics; the images final, from the database."""
    with urllib.request.urlopen(base + "/metrics", timeout=10) as response:
        text = response.read().decode()
    rows = query_database(database_url, "SELECT count(*) FROM images_image WHERE optimized")
    found = {"optimized": float(rows[0][0])}
    names = {
        "images_optimize_backlog": "backlog",
        "images_optimize_lag_seconds": "lag",
        "images_compact_backlog": "compact",
        "images_compact_lag_seconds": "compact_lag",
    }
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in names:
            found[names[name]] = float(value)
        elif name.startswith("images_optimized_total{"):
            effort = name.partition('effort="')[2].partition('"')[0]
            found[f"effort {effort}"] = found.get(f"effort {effort}", 0.0) + float(value)
    return found


def offer(port: int, body: bytes, content_type: str, rate: float, seconds: float, run: Run) -> None:
    """Open-loop: request i is due at start + i / rate, whatever the answers before it."""
    due: queue.Queue[int | None] = queue.Queue()
    lock = threading.Lock()

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while (n := due.get()) is not None:
            stamp = f"2024-01-01T00:00:00.{n:06d}Z"
            path = f"/collections/images?deviceId=sustained-{n % 97}&timestamp={stamp}"
            try:
                connection.request("POST", path, body, {"Content-Type": content_type})
                response = connection.getresponse()
                response.read()
                ok = response.status == 201
            except OSError:
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                ok = False
            with lock:
                if ok:
                    run.accepted += 1
                else:
                    run.errors += 1
        connection.close()

    clients = [threading.Thread(target=client) for _ in range(8)]
    for thread in clients:
        thread.start()
    start = time.monotonic()
    total = int(rate * seconds)
    for n in range(total):
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        due.put(n)
    for _ in clients:
        due.put(None)
    for thread in clients:
        thread.join()


def one_run(
    image: Path,
    rate: float,
    optimizers: int,
    seconds: float,
    s3_env: dict,
    checkout: Path = ROOT,
) -> Run:
    run = Run(rate, optimizers)
    content_type = "image/png" if image.suffix == ".png" else "image/jpeg"
    body = image.read_bytes()
    with tempfile.TemporaryDirectory() as tmp, fresh_database(Path(tmp)) as database_url:
        env = serve_env(database_url, IMAGES_OPTIMIZE_LAG_BOUND=str(LAG_BOUND), **s3_env)
        port = free_port()
        log = Path(tmp) / "serve.log"
        server = start_serve(
            log, env, port, 2, "--coap-port", "0", "--optimizers", str(optimizers), root=checkout
        )
        try:
            base = f"http://127.0.0.1:{port}"
            loader = threading.Thread(
                target=offer, args=(port, body, content_type, rate, seconds, run)
            )
            cpu_start = tree_cpu(server.pid)
            loader.start()
            figures: dict[str, float] = {}
            while loader.is_alive() or not figures:
                figures = metrics(base, database_url)
                run.max_lag = max(run.max_lag, figures.get("lag", 0.0))
                run.max_compact_lag = max(run.max_compact_lag, figures.get("compact_lag", 0.0))
                loader.join(timeout=1.0)
            run.optimized_during = figures["optimized"]
            run.backlog_at_end = figures.get("backlog", 0.0)
            run.compact_at_end = figures.get("compact", 0.0)
            run.lag_at_end = figures.get("lag", 0.0)
            drain_start = time.monotonic()
            final_at = None
            while time.monotonic() - drain_start < 900:
                figures = metrics(base, database_url)
                if final_at is None and not figures.get("backlog"):
                    final_at = time.monotonic()
                    run.cpu_final = tree_cpu(server.pid) - cpu_start
                if not figures.get("backlog") and not figures.get("compact"):
                    break
                time.sleep(1.0)
            run.cpu_all = tree_cpu(server.pid) - cpu_start
            if final_at is None:  # never all final within the wait: all it took
                run.cpu_final = run.cpu_all
            run.drain_seconds = time.monotonic() - drain_start
            run.final_drain_seconds = (final_at or time.monotonic()) - drain_start
            run.efforts = {
                key.removeprefix("effort "): value
                for key, value in figures.items()
                if key.startswith("effort ")
            }
            rows = query_database(
                database_url,
                "SELECT sum(at_rest_size), sum(original_size), count(*) FROM images_image",
            )
            stored, original, _ = rows[0]
            run.ratios["all"] = (stored or 0) / (original or 1)
        finally:
            stop(server, timeout=30)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", type=Path, default=CORPUS / "skimage__brick.png")
    parser.add_argument("--rates", type=float, nargs="+", default=[20.0, 40.0, 60.0])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--optimizers", type=int, nargs="+", default=[os.cpu_count() or 1])
    parser.add_argument("--s3", action="store_true", help="image bytes in a local SeaweedFS")
    parser.add_argument("--checkout", type=Path, default=ROOT, help="serve this checkout")
    args = parser.parse_args()

    s3_env: dict[str, str] = {}
    store = None
    if args.s3:
        import boto3

        from ops.seaweedfs import ObjectStore

        store = ObjectStore(Path(tempfile.mkdtemp(prefix="bench-weed-")))
        store.wait()
        s3_env = store.environment("bench-images")
        boto3.client(
            "s3",
            endpoint_url=store.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key="local-secret",
        ).create_bucket(Bucket="bench-images")
    database = database_kind()
    print(
        f"image {args.image.name} ({args.image.stat().st_size:,} bytes); "
        f"{args.seconds:.0f} s per run; serve with 2 HTTP workers, deferred; database {database}; "
        f"storage {'S3 (SeaweedFS)' if args.s3 else 'db'}; {os.cpu_count()} cores; "
        f"lag bound {LAG_BOUND} s; serving {args.checkout}"
    )
    print(
        f"{'offered/s':>9} {'optimizers':>10} {'accepted/s':>10} {'final/s':>8} "
        f"{'opt lag s':>9} {'cmp lag s':>9} {'backlogs':>9} {'drain s':>7} {'ratio':>6} "
        f"{'bounded':>7} {'e2e/s':>6} {'ms/final':>8} {'ms/all':>6}  efforts (full/quick/none)"
    )
    best: Run | None = None
    try:
        for rate in args.rates:
            for optimizers in args.optimizers:
                run = one_run(args.image, rate, optimizers, args.seconds, s3_env, args.checkout)
                backlogs = f"{run.backlog_at_end:.0f}+{run.compact_at_end:.0f}"
                print(
                    f"{rate:9.1f} {optimizers:10d} {run.accepted / args.seconds:10.1f} "
                    f"{run.optimized_during / args.seconds:8.1f} {run.max_lag:9.1f} "
                    f"{run.max_compact_lag:9.1f} {backlogs:>9} {run.drain_seconds:7.1f} "
                    f"{run.ratios['all']:6.4f} {'yes' if run.bounded else 'no':>7} "
                    f"{run.e2e_rate(args.seconds):6.1f} "
                    f"{run.cpu_ms(run.cpu_final):8.1f} {run.cpu_ms(run.cpu_all):6.1f}  "
                    + "/".join(f"{run.efforts.get(e, 0):.0f}" for e in ("full", "quick", "none"))
                    + (f"  ({run.errors} errors)" if run.errors else ""),
                    flush=True,
                )
                if run.bounded and (best is None or run.rate > best.rate):
                    best = run
    finally:
        if store is not None:
            store.stop()
    if best is None:
        print("no offered rate kept the lag bounded")
    else:
        print(
            f"highest offered rate with the lag bounded: {best.rate:.1f}/s "
            f"({best.optimizers} optimizer{'s' if best.optimizers > 1 else ''}), "
            f"stored/original {best.ratios['all']:.4f}"
        )


if __name__ == "__main__":
    main()
