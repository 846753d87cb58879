"""The outbox's newest events, read once per round for every receiver a deliverer serves.

Measured (bench/deliveries.py, docs/performance.md): eleven receiver threads
each querying the outbox, and each writing its cursor, on every wake cost
6–7 ms of CPU per upload, more than the upload itself. So the deliverer's
main thread reads what is new once (``seq`` above the last it read, plain
tuples), and each receiver takes its share from memory. A receiver
further behind than what the feed holds (one that was failing, or a new
deliverer's first round) reads the outbox itself until it catches up.

Reading ``seq > upto`` never skips an event: events commit in ``seq`` order
(:mod:`images.delivery.outbox`), so once one is visible every lower one has
committed (or rolled back).
"""

from __future__ import annotations

import bisect
import threading

from images.delivery import outbox
from images.delivery.models import OutboxEvent
from images.delivery.outbox import FIELDS, Event

# Events kept in memory (1 to 2 KB each): past this, the oldest go, and a
# receiver still behind them reads the outbox itself.
FEED_EVENTS = 5_000
READ_BATCH = 2_000


class Feed:
    """The events in ``(start, upto]``, in order, shared by a deliverer's receivers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # In seq order; ``_seqs`` beside them finds a cursor's place by bisection.
        self._events: list[Event] = []
        self._seqs: list[int] = []
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
            self._seqs.extend(row[0] for row in rows)
            self.upto = rows[-1][0]
            if len(self._events) > FEED_EVENTS:
                self._drop(len(self._events) - FEED_EVENTS)
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
            for index in range(bisect.bisect_right(self._seqs, cursor), len(self._events)):
                event = self._events[index]
                if outbox.device_matches(device, event.device_id):
                    taken.append(event)
                    if len(taken) == limit:
                        return taken, event.seq
            return taken, self.upto

    def forget_until(self, seq: int) -> None:
        """Drop the events every receiver here is past."""
        with self._lock:
            self._drop(bisect.bisect_right(self._seqs, seq))

    def _drop(self, count: int) -> None:
        if count > 0:
            self.start = self._seqs[count - 1]
            del self._events[:count]
            del self._seqs[:count]
