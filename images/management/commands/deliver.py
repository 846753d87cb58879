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
            help="run only on CPU nothing else wants (Linux SCHED_IDLE; elsewhere nice 19)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["idle"]:
            idle()
        else:
            os.nice(options["nice"])
        try:
            deliverer = Deliverer()
        except BrokerRefused as exc:
            raise CommandError(str(exc)) from None
        stopping = threading.Event()

        def stop(signum: int, frame: FrameType | None) -> None:
            stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        deliverer.run(stopping)


def idle() -> None:
    """This process, and the threads it starts later, at the idle scheduling class.

    Nice 19 still takes a share of a busy CPU, and a woken HTTP worker may
    wait for it; a SCHED_IDLE thread is preempted at once by any other
    (bench/deliveries.py measured both: docs/performance.md, "Deliveries").
    """
    if hasattr(os, "sched_setscheduler"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    else:
        os.nice(19)
