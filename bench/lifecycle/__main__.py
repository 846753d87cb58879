"""An image's end of life at scale: exporting a device, pruning under load (prints figures).

    python -m bench.lifecycle [--rows 100000] [--rate 20] [--quiet 30] [--only export|prune|policy]

Run from the repository root. Each part fills a fresh database (SQLite, or
PostgreSQL when DATABASE_URL names it) fast, in a setup subprocess: a handful
of noise PNGs go through ``image_ingest``, then their rows are copied with new
ids, keys and times.

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
3. Policy: ``--rows`` images of 10,000 devices received over the past 60
   days, four policies (a family bounded by bytes, one by count, one kept
   for ever, a device by age), IMAGES_RETENTION_DAYS=30 and
   IMAGES_RETENTION_MAX_BYTES at 40 % of what is held; ``prune --dry-run``,
   ``prune`` and ``prune`` again (a ``--watch`` round with little to do)
   are timed, start-up included, with nothing else running.

Nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from bench.lifecycle.export import bench_export
from bench.lifecycle.fill import populate
from bench.lifecycle.prune import bench_policy, bench_prune
from bench.support import database_kind, fresh_database


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.lifecycle", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--rows", type=int, default=100_000, help="prune rows; export: a tenth")
    parser.add_argument("--rate", type=float, default=20.0, help="uploads per second")
    parser.add_argument("--quiet", type=float, default=30.0, help="seconds before the prune")
    parser.add_argument("--only", choices=("export", "prune", "policy"))
    parser.add_argument("--populate", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.populate:
        populate(json.loads(args.populate))
        return
    database = database_kind()
    print(
        f"database {database}; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} "
        "at the start; serve with 1 HTTP worker",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench-lifecycle-") as tmp:
        for part in ("export", "prune", "policy"):
            if args.only not in (None, part):
                continue
            directory = Path(tmp) / part
            directory.mkdir()
            with fresh_database(directory) as url:
                if part == "export":
                    bench_export(directory, url, max(args.rows // 10, 1))
                elif part == "prune":
                    bench_prune(directory, url, args.rows, args.rate, args.quiet)
                else:
                    bench_policy(url, args.rows)


if __name__ == "__main__":
    main()
