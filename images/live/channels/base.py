"""What every channel is: the two protocols, and the reconnecting loop they share.

A channel has ``publish(payload)`` and ``listen(listener)``, which runs in
the hub's thread while anyone watches: it calls ``listener.listening()``
once it hears the channel, ``listener.pace()`` when something waits to be
read (which may sleep a moment, so that a burst is read and delivered at
once), ``listener.deliver(payloads)`` for what arrives, ``listener.gap()``
after the channel was lost and found again (events may have been missed
meanwhile), and returns once ``listener.idle()``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)

# The name events travel under (PostgreSQL's channel, Redis's).
CHANNEL_NAME = "images_events"
# How often a listener checks that its channel is alive, and whether anyone still watches.
HEARTBEAT_SECONDS = 10.0
IDLE_CHECK_SECONDS = 1.0
_RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)
# The most events one read hands over (the rest follow at once).
_BATCH_LIMIT = 10_000


class Listener(Protocol):
    def listening(self) -> None: ...

    def pace(self) -> None: ...

    def deliver(self, payloads: list[bytes]) -> None: ...

    def gap(self) -> None: ...

    def idle(self) -> bool: ...


class Channel(Protocol):
    def publish(self, payload: bytes) -> None: ...

    def listen(self, listener: Listener) -> None: ...


def retrying(connect_and_listen: Callable[[], None], listener: Listener, name: str) -> None:
    """Run ``connect_and_listen`` until idle; after a failure, reconnect (with backoff)."""
    failures = 0
    while not listener.idle():
        started = time.monotonic()
        try:
            connect_and_listen()
        except Exception as exc:  # noqa: BLE001 - any failure means: reconnect
            if time.monotonic() - started > 60:
                failures = 0  # it had been working: start the backoff again
            pause = _RETRY_SECONDS[min(failures, len(_RETRY_SECONDS) - 1)]
            if failures == 0:
                log.warning("lost the %s event channel (%s); reconnecting", name, exc)
            failures += 1
            time.sleep(pause)


def gather(first: list, more: Callable[[], list]) -> list:
    """``first``, then what ``more()`` finds came meanwhile, until it finds nothing (or plenty)."""
    batch = list(first)
    while len(batch) < _BATCH_LIMIT and (found := more()):
        batch += found
    return batch
