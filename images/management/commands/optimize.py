"""``optimize``: the full lossless pass for images stored by a fast one.

With IMAGES_OPTIMIZE=deferred, ingest stores the checked image and marks it
waiting; this command finishes the job (:mod:`images.lifecycle.optimizer`). ``serve``
runs it with ``--watch`` at a lower CPU priority, so it takes what ingest
leaves idle; any number of them may run, on any number of machines sharing
the database, and each waiting image is finished by exactly one.

A worker outlives an outage: when the database or the object store stops
answering, it waits (doubling the wait up to a minute) and tries again.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import DatabaseError, close_old_connections

from images.errors import Unavailable
from images.lifecycle.optimizer import compact_next, optimize_next

logger = logging.getLogger(__name__)
_LONGEST_WAIT_SECONDS = 60.0


class Command(BaseCommand):
    help = "Optimize images stored by the fast pass (IMAGES_OPTIMIZE=deferred)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--watch", action="store_true", help="keep running, polling")
        parser.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
        parser.add_argument("--nice", type=int, default=10, help="CPU priority increment")
        parser.add_argument(
            "--compact",
            "--rearchive",  # its name until 2026-12; deprecated (docs/compaction.md)
            dest="compact",
            action="store_true",
            help="hold JPEGs stored before compaction as JPEG XL (resumable, verified)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        os.nice(options["nice"])
        stopping = False

        def stop(signum: int, frame: FrameType | None) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        if options["compact"]:
            self._compact(lambda: stopping)
            return
        total = 0
        wait = options["interval"]
        while not stopping:
            try:
                result = optimize_next()
            except (DatabaseError, Unavailable) as exc:
                if not options["watch"]:
                    raise
                logger.warning("optimizer: %s; trying again in %.0f s", exc, wait)
                _sleep(wait, lambda: stopping)
                wait = min(wait * 2, _LONGEST_WAIT_SECONDS)
                close_old_connections()
                continue
            wait = options["interval"]
            if result is not None:
                total += 1
                continue
            if not options["watch"]:
                break
            _sleep(options["interval"], lambda: stopping)
            # A long-lived loop, like a request cycle: drop broken or expired
            # connections (CONN_MAX_AGE) between rounds.
            close_old_connections()
        self.stdout.write(f"optimized {total} image{'' if total == 1 else 's'}")

    def _compact(self, stopping: Any) -> None:
        counts: dict[str, int] = {}
        after = None
        while not stopping():
            done = compact_next(after=after)
            if done is None:
                break
            after, result = done
            counts[result] = counts.get(result, 0) + 1
        self.stdout.write(f"compacted: {_compact_report(counts)}")


def _compact_report(counts: dict[str, int]) -> str:
    return ", ".join(f"{result} {count}" for result, count in sorted(counts.items())) or "nothing"


def _sleep(seconds: float, stopping: Any) -> None:
    """Sleep up to ``seconds``, waking early once ``stopping()`` is true."""
    deadline = time.monotonic() + seconds
    while not stopping() and time.monotonic() < deadline:
        time.sleep(min(0.2, deadline - time.monotonic()))
