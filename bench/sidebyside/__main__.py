"""The prototype and this service side by side, one run on one box (prints figures).

    python -m bench.sidebyside [--seconds 10] [--rounds 3] [--ingest-seconds 30]
        [--rate-factor 3] [--optimizers 1] [--calibration brief|plain|both]
        [--only download|ingest] [--images NAME...] [--patience 60]
        [--by-id] [--serve-only] [--also LABEL=PATH ...]

Run from the repository root. The prototype's code is not here:
``bench/prototype/`` is a stand-in rebuilt from its README and the figures it
was measured at (see its README.md). Everything binds to 127.0.0.1 on free
ports; every server gets a fresh database (SQLite, or for ours PostgreSQL when
DATABASE_URL names it), removed at the end.

1. Download of one stored ``skimage__brick.png`` by ``deviceId`` and
   ``timestamp`` (the prototype's URL), wrk at 4 connections for ``--seconds``,
   in alternating rounds: the prototype under gunicorn (2 sync workers); ours
   under ``manage.py serve --workers 2`` (granian); ours under the same
   gunicorn; ours under ``serve`` with the bytes in a local SeaweedFS. Printed:
   req/s per round, the median, the server's CPU per request (its process tree,
   SeaweedFS included for the S3 row) and median ours/prototype. ``--by-id``:
   each of ours also by id (``/collections/images/{id}``); ``--serve-only``:
   only the prototype and ``serve``; ``--also LABEL=PATH``: another checkout of
   this repository (say main before a change: ``git worktree add``) under
   ``serve`` too, in the same interleaved rounds, so before and after are one run.
2. Ingest end to end. The prototype re-saves inline, so accepted == done: its
   closed-loop rate (wrk c4, JSON with base64, unique keys) for brick.png, then
   china.jpg, with its workers' CPU per upload, for each calibration asked for
   (``brief``: the per-image CPU figures it was measured at; ``plain``: one
   Pillow re-save). Then ours through ``bench.sustained.one_run`` (raw bodies,
   open loop) offered ``--rate-factor`` times the highest prototype rate of that
   image: accepted/s, optimized/s, lag, backlog, drain and ratio, the
   end-to-end rate (until every served byte was final) and the server's CPU
   per image with all background work, and the ratios to each prototype rate
   (and to the published 16.5 req/s for brick). ``--images`` picks the images.
   Rates are over the time the offer really took (see ``offer_timed``). A 30 s
   run can hardly build a lag past the bound (60 s); the project's goals need
   ``--ingest-seconds 180``. one_run waits for the backlog to drain
   (up to 900 s per image), which is most of this phase's time.

The box may be shared: before every measurement the script waits up to
``--patience`` seconds for the machine to be quiet, and prints how busy it was
(before, and during: cores busy with neither the server measured nor wrk).
Nothing here asserts.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType

from bench.sidebyside.download import download
from bench.sidebyside.ingest import IMAGES, ingest
from bench.support import database_kind


@contextmanager
def logs_on_failure(directory: Path) -> Iterator[None]:
    """On an error, the end of every server log under ``directory`` (removed right after)."""
    try:
        yield
    except Exception:
        for log in sorted(directory.glob("*/*.log")):  # ours, not weed's own databases
            print(f"--- {log.relative_to(directory)}:", file=sys.stderr)
            print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
        raise


@contextmanager
def interrupted_by_sigterm() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so that every ``finally`` stops what it started."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sidebyside", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="per download figure")
    parser.add_argument("--rounds", type=int, default=3, help="alternating download rounds")
    parser.add_argument("--ingest-seconds", type=float, default=30.0, help="per ingest phase")
    parser.add_argument("--rate-factor", type=float, default=3.0, help="ours offered / prototype")
    parser.add_argument("--optimizers", type=int, default=1)
    parser.add_argument("--calibration", choices=["brief", "plain", "both"], default="both")
    parser.add_argument("--only", choices=["download", "ingest"])
    parser.add_argument(
        "--images",
        nargs="+",
        choices=IMAGES,
        default=list(IMAGES),
        help="the images of the ingest phase (default: both)",
    )
    parser.add_argument(
        "--patience", type=float, default=60.0, help="seconds to wait for a quiet machine"
    )
    parser.add_argument("--by-id", action="store_true", help="ours by id as well as by key")
    parser.add_argument(
        "--serve-only", action="store_true", help="only the prototype and ours under serve"
    )
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="LABEL=PATH",
        help="another checkout of this repository, also under serve (repeatable)",
    )
    args = parser.parse_args()
    also = {}
    for item in args.also:
        label, _, path = item.partition("=")
        if not label or not (Path(path) / "manage.py").is_file():
            parser.error(f"--also {item}: LABEL=PATH, PATH a checkout with manage.py")
        also[label] = Path(path).resolve()
    calibrations = ["brief", "plain"] if args.calibration == "both" else [args.calibration]
    database = database_kind()
    print(
        f"side by side on {os.cpu_count()} cores: prototype stand-in (bench/prototype, gunicorn "
        f"2 sync workers, SQLite) vs ours ({database}); wrk on the same cores",
        flush=True,
    )
    try:
        with ExitStack() as stack:
            stack.enter_context(interrupted_by_sigterm())
            name = stack.enter_context(tempfile.TemporaryDirectory(prefix="sidebyside-"))
            tmp = Path(name)
            stack.enter_context(logs_on_failure(tmp))
            if args.only in (None, "download"):
                download(
                    tmp,
                    args.seconds,
                    args.rounds,
                    args.patience,
                    by_id=args.by_id,
                    serve_only=args.serve_only,
                    also=also,
                )
            if args.only in (None, "ingest"):
                ingest(
                    tmp,
                    args.ingest_seconds,
                    args.rate_factor,
                    args.optimizers,
                    calibrations,
                    args.patience,
                    tuple(args.images),
                )
    except KeyboardInterrupt:
        print("\ninterrupted: servers stopped, temporary files removed", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
