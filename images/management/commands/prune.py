"""``prune [--dry-run] [--watch]``: apply IMAGES_RETENTION_DAYS and IMAGES_RETENTION_MAX_PER_DEVICE.

Prints each image it deletes (or, with ``--dry-run``, would delete). ``serve``
runs it with ``--watch`` when retention is on, every
IMAGES_RETENTION_INTERVAL seconds; an outage is waited out, as by the
optimizer.
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

from images.errors import Unavailable
from images.lifecycle.retention import images_prune, retention_enabled

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Delete the images the retention settings say go (IMAGES_RETENTION_*)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="only print what would go")
        parser.add_argument("--watch", action="store_true", help="prune again every interval")

    def handle(self, *args: Any, **options: Any) -> None:
        if not retention_enabled():
            self.stdout.write(
                "retention is off: set IMAGES_RETENTION_DAYS or IMAGES_RETENTION_MAX_PER_DEVICE"
            )
            return
        stopping = False

        def stop(signum: int, frame: FrameType | None) -> None:
            nonlocal stopping
            stopping = True

        if options["watch"]:
            signal.signal(signal.SIGTERM, stop)
            signal.signal(signal.SIGINT, stop)
        while not stopping:
            try:
                self._prune_once(dry_run=options["dry_run"], verbose=options["verbosity"] > 0)
            except (DatabaseError, Unavailable) as exc:
                if not options["watch"]:
                    raise
                logger.warning("prune: %s; trying again next interval", exc)
            if not options["watch"]:
                return
            deadline = time.monotonic() + settings.IMAGES_RETENTION_INTERVAL
            while not stopping and time.monotonic() < deadline:
                time.sleep(0.5)
            close_old_connections()

    def _prune_once(self, *, dry_run: bool, verbose: bool) -> None:
        report = images_prune(dry_run=dry_run)
        if dry_run:
            for image_id in report.would_delete:
                self.stdout.write(f"would delete {image_id}")
            count = len(report.would_delete)
            self.stdout.write(f"would delete {count} image{'' if count == 1 else 's'}")
            return
        if verbose:
            for item in report.deleted:
                self.stdout.write(f"deleted {item.image_id}")
        count = len(report.deleted)
        self.stdout.write(f"deleted {count} image{'' if count == 1 else 's'}")
