"""``checkstorage [--repair] [--scrub-rate N]``: do rows and stored bytes agree? (API.md §10, §14)

Prints each problem, naming the image, and exits 1 when there is one: a
damaged image (what is held is missing, does not rebuild, or differs in
size or sha256 from what was received), an object with no row.
``--repair`` deletes objects with no row (left by a crash between an
object's write and its row's commit); the other problems need a person.

``--scrub-rate N`` checks at most N images a second, so that a large store
is checked beside a running service (a scrub: run it under ``nice`` from
cron or a timer, see docs/storage.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from images.errors import Unavailable
from images.storage import objects
from images.storage.maintenance import storage_check


class Command(BaseCommand):
    help = "Compare image rows with their stored bytes; --repair removes objects with no row."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--repair", action="store_true", help="delete objects with no row")
        parser.add_argument(
            "--grace",
            type=int,
            default=600,
            help="seconds: younger objects may be uploads in flight and are not judged",
        )
        parser.add_argument(
            "--scrub-rate",
            type=float,
            default=0,
            help="check at most this many images a second (0: no limit)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        problems = repaired = 0
        pace = None
        if options["scrub_rate"] > 0:
            pace = _paced(options["scrub_rate"])
        try:
            for problem in storage_check(grace=timedelta(seconds=options["grace"]), pace=pace):
                problems += 1
                if options["repair"] and problem.orphan:
                    objects.object_delete(problem.location)
                    repaired += 1
                    self.stdout.write(f"{problem}: deleted")
                else:
                    self.stdout.write(str(problem))
        except Unavailable as exc:
            raise CommandError(exc.message) from None
        if problems == repaired:
            self.stdout.write(
                f"storage is consistent{f' ({repaired} repaired)' if repaired else ''}"
            )
            return
        raise CommandError(f"{problems - repaired} problem{'' if problems == 1 else 's'} found")


def _paced(rate: float) -> Callable[[], None]:
    """A pace for ``rate`` images a second: each call waits until the next one may start."""
    interval = 1.0 / rate
    next_at = time.monotonic()

    def pace() -> None:
        nonlocal next_at
        wait = next_at - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        next_at = max(next_at, time.monotonic()) + interval

    return pace
