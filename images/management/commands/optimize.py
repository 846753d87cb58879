"""``optimize``: the background work, optimizing and compacting (API.md §10, §14).

Optimizing gives images stored by the fast pass (IMAGES_OPTIMIZE=deferred)
their final bytes; compacting holds finished JPEGs as JPEG XL without
changing what is served (:mod:`images.lifecycle`). Without flags, both
backlogs are drained once. ``--watch`` keeps running: ``serve`` runs
``--optimizers`` of these at a lower CPU priority, and any number of them
may run, on any number of machines sharing the database; each waiting
image is taken by exactly one. ``--status`` shows both backlogs and the
images kept as received after failing; ``--retry ID...`` queues those
again; ``--compact`` queues the JPEGs stored before compaction existed.
"""

from __future__ import annotations

import os
import signal
import threading
import uuid
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from images.lifecycle.backlog import BACKLOGS, failed_images, images_retry
from images.lifecycle.compactor import compact_earlier, compact_next
from images.lifecycle.optimizer import optimize_next
from images.lifecycle.workers import start_compacting, work_loop


class Command(BaseCommand):
    help = "Optimize and compact images in the background (both backlogs; --watch keeps going)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--watch", action="store_true", help="keep running, polling")
        parser.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
        parser.add_argument("--nice", type=int, default=10, help="CPU priority increment")
        parser.add_argument(
            "--compact",
            "--rearchive",  # its name until 2026-12; deprecated (docs/compaction.md)
            dest="compact",
            action="store_true",
            help="queue JPEGs stored before compaction for JPEG XL at rest, and compact them",
        )
        parser.add_argument(
            "--status", action="store_true", help="both backlogs, and the images kept after failing"
        )
        parser.add_argument(
            "--retry", nargs="+", metavar="ID", help="queue these failed images again"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["status"]:
            self._status()
            return
        if options["retry"]:
            self._retry(options["retry"])
            return
        os.nice(options["nice"])
        stopping = threading.Event()

        def stop(signum: int, frame: FrameType | None) -> None:
            stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        if options["compact"]:
            self._compact(stopping)
            return
        interval, watch = options["interval"], options["watch"]
        compactor = start_compacting(stopping, interval=interval) if watch else None
        optimized = work_loop(
            optimize_next, name="optimizer", stopping=stopping, interval=interval, watch=watch
        )
        if compactor is not None:
            compactor.join()
            return
        compacted = work_loop(compact_next, name="compactor", stopping=stopping, watch=False)
        self.stdout.write(f"optimized {optimized} image{'' if optimized == 1 else 's'}")
        self.stdout.write(f"compacted {compacted} image{'' if compacted == 1 else 's'}")

    def _compact(self, stopping: threading.Event) -> None:
        counts: dict[str, int] = {}
        after = compact_earlier()
        while after is not None and not stopping.is_set():
            while not stopping.is_set() and (result := compact_next()) is not None:
                counts[result] = counts.get(result, 0) + 1
            after = compact_earlier(after=after)
        while not stopping.is_set() and (result := compact_next()) is not None:
            counts[result] = counts.get(result, 0) + 1
        report = ", ".join(f"{result} {count}" for result, count in sorted(counts.items()))
        self.stdout.write(f"compacted: {report or 'nothing'}")

    def _status(self) -> None:
        now = timezone.now()
        for backlog in BACKLOGS:
            status = backlog.status()
            self.stdout.write(
                f"{backlog.name} backlog: {status.waiting} waiting,"
                f" lag {status.lag_seconds(now):.1f} s"
            )
        failed = failed_images()
        self.stdout.write(f"kept as received after failing: {len(failed)}")
        for image in failed:
            self.stdout.write(f"  {image.id}  {image.device_id}  {image.failure}")

    def _retry(self, ids: list[str]) -> None:
        try:
            keys = [uuid.UUID(each) for each in ids]
        except ValueError:
            raise CommandError("--retry takes image ids (UUIDs)") from None
        retried = images_retry(keys)
        self.stdout.write(f"queued {retried} image{'' if retried == 1 else 's'} again")
        if retried < len(keys):
            raise CommandError(f"{len(keys) - retried} of them had not failed (or do not exist)")
