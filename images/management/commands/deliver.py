"""``deliver``: send the outbox's events to webhooks and MQTT (API.md §16), until stopped.

``serve`` runs one beside its HTTP workers; a larger installation can run it
on machines of its own instead (``serve --deliverers 0``), as many as it
likes: receivers are shared out by lease, each served by one at a time.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from images.delivery.mqtt import BrokerRefused
from images.delivery.worker import Deliverer


class Command(BaseCommand):
    help = "Deliver events to the webhooks (manage.py webhook) and to IMAGES_MQTT, until stopped."

    def add_arguments(self, parser: CommandParser) -> None:
        # Below the HTTP workers, as the optimizer: deliveries can wait some
        # milliseconds, uploads should not (bench/deliveries.py).
        parser.add_argument("--nice", type=int, default=10, help="CPU priority increment")
        parser.add_argument(
            "--idle",
            action="store_true",
            help="send only on CPU nothing else wants (Linux SCHED_IDLE; elsewhere nice 19)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # With --idle this thread, which writes the receivers' states, runs
        # at nice 19, and the receivers' threads in the idle class.
        os.nice(19 if options["idle"] else options["nice"])
        try:
            deliverer = Deliverer(idle=options["idle"])
        except BrokerRefused as exc:
            raise CommandError(str(exc)) from None
        stopping = threading.Event()

        def stop(signum: int, frame: FrameType | None) -> None:
            stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        deliverer.run(stopping)
