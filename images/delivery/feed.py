"""The outbox's newest events, read once per round for every receiver a deliverer serves.

Measured (bench/deliveries.py, docs/performance.md): eleven receiver threads
each querying the outbox, and each writing its cursor, on every wake cost
6–7 ms of CPU per upload, more than the upload itself. So the deliverer's
main thread reads what is new once (``seq`` above the last it read, plain
tuples), and each receiver thread takes its share from memory. A receiver
further behind than what the feed holds (one that was failing, or a new
deliverer's first round) reads the outbox itself until it catches up.

Reading ``seq > upto`` never skips an event: events commit in ``seq`` order
(:mod:`images.delivery.outbox`), so once one is visible every lower one has
committed (or rolled back).
"""

from __future__ import annotations

import threading
from collections import deque

from images.delivery import outbox
from images.delivery.models import OutboxEvent
from images.delivery.outbox import FIELDS, Event

# Events kept in memory (about 1 KB each): past this, the oldest go, and a
# receiver still behind them reads the outbox itself.
FEED_EVENTS = 20_000
READ_BATCH = 2_000


class Feed:
    """The events in ``(start, upto]``, in order, shared by a deliverer's receiver threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: deque[Event] = deque()
        self.start: int | None = None  # None until the first read
        self.upto = 0

    def refresh(self) -> int:
        """Read what was committed since the last read (one query); how many."""
        if self.start is None:
            head = outbox.head()
            with self._lock:
                self.start = self.upto = head
            return 0
        rows = list(
            OutboxEvent.objects.filter(seq__gt=self.upto)
            .order_by("seq")
            .values_list(*FIELDS)[:READ_BATCH]
        )
        if not rows:
            return 0
        with self._lock:
            self._events.extend(Event(*row) for row in rows)
            self.upto = rows[-1][0]
            while len(self._events) > FEED_EVENTS:
                self.start = self._events.popleft().seq
        return len(rows)

    def after(self, cursor: int, device: str, limit: int) -> tuple[list[Event], int] | None:
        """The events past ``cursor`` for ``device`` (a pattern), and how far they cover.

        None when ``cursor`` is behind what the feed holds: read the outbox.
        The second value is the seq up to which nothing else is waiting for
        this receiver (its cursor may move there once these are done).
        """
        with self._lock:
            if self.start is None or cursor < self.start:
                return None
            taken: list[Event] = []
            for event in self._events:
                if event.seq <= cursor or not _matches(device, event.device_id):
                    continue
                taken.append(event)
                if len(taken) == limit:
                    return taken, event.seq
            return taken, self.upto

    def forget_until(self, seq: int) -> None:
        """Drop the events every receiver here is past."""
        with self._lock:
            while self._events and self._events[0].seq <= seq:
                self.start = self._events.popleft().seq


def _matches(device: str, device_id: str) -> bool:
    return outbox.device_matches(device, device_id)
