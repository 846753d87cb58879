"""``prune [--dry-run] [--watch]``: apply the retention settings and policies (API.md §11, §16).

Prints, for each policy, for the global settings and for
IMAGES_RETENTION_MAX_BYTES, how many images it deleted (or, with
``--dry-run``, would delete) and their bytes at rest; with ``-v 2`` each
image too, oldest first; with ``-v 0`` only the total. ``serve`` runs it
with ``--watch``, every IMAGES_RETENTION_INTERVAL seconds; each round reads
the policies afresh, and a round with nothing to apply (no bound set, no
policy) does nothing. An outage is waited out, as by the optimizer.
"""

from __future__ import annotations

import logging
import signal
import time
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import DatabaseError, close_old_connections

from formats.rfc3339 import format_timestamp
from images.errors import Unavailable
from images.lifecycle.expiry import Expired
from images.lifecycle.retention import PruneReport, images_prune, retention_enabled

logger = logging.getLogger(__name__)
OFF = (
    "retention is off: set IMAGES_RETENTION_DAYS, IMAGES_RETENTION_MAX_PER_DEVICE or "
    "IMAGES_RETENTION_MAX_BYTES, or add a policy (manage.py policy set)"
)


class Command(BaseCommand):
    help = "Delete the images the retention settings and policies say go (IMAGES_RETENTION_*)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="only print what would go")
        parser.add_argument("--watch", action="store_true", help="prune again every interval")

    def handle(self, *args: Any, **options: Any) -> None:
        watch = options["watch"]
        if not watch and not retention_enabled():
            self.stdout.write(OFF)
            return
        stopping = False

        def stop(signum: int, frame: FrameType | None) -> None:
            nonlocal stopping
            stopping = True

        if watch:
            signal.signal(signal.SIGTERM, stop)
            signal.signal(signal.SIGINT, stop)
        while not stopping:
            try:
                # Read each round: a policy added while watching is applied.
                if retention_enabled():
                    self._prune_once(dry_run=options["dry_run"], verbosity=options["verbosity"])
            except (DatabaseError, Unavailable) as exc:
                if not watch:
                    raise
                logger.warning("prune: %s; trying again next interval", exc)
            if not watch:
                return
            deadline = time.monotonic() + settings.IMAGES_RETENTION_INTERVAL
            while not stopping and time.monotonic() < deadline:
                time.sleep(0.5)
            close_old_connections()

    def _prune_once(self, *, dry_run: bool, verbosity: int) -> None:
        report = images_prune(dry_run=dry_run)
        verb = "would delete" if dry_run else "deleted"
        for source in report.plan:
            removed = report.removed(source)
            if verbosity >= 1:
                self.stdout.write(f"{source}: {verb} {_tally(removed)}")
            if verbosity >= 2:
                for image in removed:
                    self.stdout.write(f"  {verb} {_line(image)}")
        self.stdout.write(f"{verb} {_tally(_every(report))}")


def _every(report: PruneReport) -> list[Expired]:
    return [image for source in report.plan for image in report.removed(source)]


def _tally(images: list[Expired]) -> str:
    """``3 images, 12,345 bytes``: how many, and what they held at rest."""
    count = len(images)
    size = sum(image.at_rest_size for image in images)
    return f"{count} image{'' if count == 1 else 's'}, {size:,} bytes"


def _line(image: Expired) -> str:
    stamp = format_timestamp(image.timestamp)
    return f"{image.id} {image.device_id} {stamp} {image.at_rest_size:,} bytes"
