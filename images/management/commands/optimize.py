"""``optimize``: the full lossless pass for images stored by a fast one.

With IMAGES_OPTIMIZE=deferred, ingest stores a quickly optimised encoding
and marks the image pending; this command finishes the job. ``serve`` runs it
with ``--watch`` at a lower CPU priority, so it takes what ingest leaves idle.
"""

from __future__ import annotations

import os
import signal
import time
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections

from images.services import image_optimize_pending


class Command(BaseCommand):
    help = "Optimise images stored by the fast pass (IMAGES_OPTIMIZE=deferred)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--watch", action="store_true", help="keep running, polling")
        parser.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
        parser.add_argument("--nice", type=int, default=10, help="CPU priority increment")

    def handle(self, *args: Any, **options: Any) -> None:
        os.nice(options["nice"])
        stopping = False

        def stop(signum: int, frame: FrameType | None) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        total = 0
        while not stopping:
            done = image_optimize_pending(batch=10)
            total += done
            if not options["watch"] and done == 0:
                break
            if done == 0:
                time.sleep(options["interval"])
            if options["watch"]:
                # A long-lived loop, like a request cycle: drop broken or
                # expired connections (CONN_MAX_AGE) between rounds.
                close_old_connections()
        self.stdout.write(f"optimised {total} images")
