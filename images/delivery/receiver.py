"""One receiver's deliveries: in order, under a lease, with backoff; a task on the deliverer's loop.

Every receiver a deliverer holds is a task on one event loop
(:mod:`images.delivery.sending`); what blocks (the database, the MQTT
client's acknowledgements) runs in threads beside it, so a slow or dead
receiver delays only itself.

Its state (cursor, failures) lives in memory while this deliverer holds the
receiver. The task marks what changed (a failure at once, its cursor at
most every ``CURSOR_SECONDS``) and the deliverer's main thread writes it, for
every receiver in one transaction, with the leases' renewal
(:func:`states_written`). After a crash the
events of those seconds are sent again, which at-least-once allows.

Why the main thread: each write takes SQLite's one write lock, which an
upload may then wait for. In ``serve`` the loop runs in the idle
scheduling class, which any other thread preempts at once; a thread
preempted while it held the lock could keep uploads sleeping in SQLite's
busy handler until a CPU fell idle (a priority inversion; docs/performance.md,
"Deliveries"). The main thread runs in the normal class at nice 19, and
writes once a second at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Sequence
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import Q
from django.utils import timezone

from images.delivery import outbox
from images.delivery.feed import Feed
from images.delivery.models import MQTT, Receiver
from images.delivery.mqtt import Broker, Publisher
from images.delivery.outbox import Event
from images.delivery.posting import Poster
from images.delivery.sending import Sending
from images.delivery.webhooks import DELIVERED, Outcome
from ops import metrics

log = logging.getLogger(__name__)

LEASE_SECONDS = 10.0
POLL_SECONDS = 1.0
CURSOR_SECONDS = 5.0
BATCH = 100
# Backoff after the n-th failure in a row: 1 s, 2 s, 4 s... at most 10 minutes.
BACKOFF_MAX_SECONDS = 600.0


class ReceiverLoop:
    """One receiver's deliveries, for as long as its deliverer holds the lease."""

    def __init__(
        self,
        receiver: Receiver,
        *,
        holder: str,
        feed: Feed,
        sending: Sending,
        broker: Broker | None,
        stopping: threading.Event,
    ) -> None:
        self.receiver = receiver
        self.holder = holder
        self.feed = feed
        self.sending = sending
        self.stopping = stopping
        self.lost = False
        self.cursor = receiver.cursor  # in memory; the row's may lag by a few seconds
        self._saved_at = time.monotonic()
        # Marked by this task, written by the deliverer's main thread.
        self._unsaved: dict[str, object] = {}
        self._unsaved_lock = threading.Lock()
        self.publisher = Publisher(broker) if receiver.kind == MQTT and broker is not None else None
        self.poster = Poster(receiver)

    async def run(self) -> None:
        seen = self.sending.generation
        try:
            # Until removed, or taken over after we stalled (states_written finds out).
            while not self.stopping.is_set() and not self.lost:
                wait = self._due_in()
                if wait > 0:
                    await asyncio.sleep(min(wait, POLL_SECONDS))
                    continue
                try:
                    busy = await self._round()
                    if time.monotonic() - self._saved_at >= CURSOR_SECONDS:
                        self._save(cursor=self.cursor)
                except DatabaseError as exc:
                    # Waited out like an optimizer's outage; what was sent and
                    # not yet recorded is sent again (at least once).
                    log.warning("deliveries to %s: %s", self.receiver, exc)
                    await asyncio.sleep(random.uniform(0.05, 0.5))
                    continue
                if not busy:
                    seen = await self.sending.woken(seen, POLL_SECONDS)
        finally:
            self.poster.close()
            await self.sending.blocking(self._let_go)

    def _let_go(self) -> None:
        if self.publisher is not None:
            self.publisher.close()
        with contextlib.suppress(DatabaseError):  # else the lease runs out by itself
            if not self.lost:
                self._save(cursor=self.cursor)
                self.flush()
            Receiver.objects.filter(pk=self.receiver.pk, lease_holder=self.holder).update(
                lease_until=None, lease_holder=""
            )

    def _due_in(self) -> float:
        retry_at = self.receiver.retry_at
        return 0.0 if retry_at is None else (retry_at - timezone.now()).total_seconds()

    async def _round(self) -> bool:
        """Send what is waiting; False when nothing was."""
        shared = self.feed.after(self.cursor, self.receiver.device, BATCH)
        if shared is None:  # behind the feed: read the outbox itself
            events, covered = await self.sending.blocking(self._behind)
        else:
            events, covered = shared
        if not events:
            self.cursor = max(self.cursor, covered)  # nothing of ours up to there
            return False
        done, outcome = await self._send(events)
        if done:
            self.cursor = events[done - 1].seq
        if outcome.result == "retry":
            await self.sending.blocking(self._failed, events[done], outcome)
            return True
        self.cursor = max(self.cursor, covered)
        if self.receiver.attempts:
            self._save(
                cursor=self.cursor, attempts=0, failing_since=None, retry_at=None, last_error=""
            )
        return True

    def _behind(self) -> tuple[Sequence[Event], int]:
        """The next events from the outbox itself, and how far they cover (a thread)."""
        head = outbox.head()
        events = outbox.pending(self.receiver.device, self.cursor, BATCH)
        return events, head if len(events) < BATCH else events[-1].seq

    async def _send(self, events: Sequence[Event]) -> tuple[int, Outcome]:
        """Send in order until one must be retried: how many are done, and the last outcome."""
        kind = self.receiver.kind
        if self.publisher is not None:
            done, outcome = await self.sending.blocking(self.publisher.send, list(events))
            metrics.record_deliveries(kind, "delivered", done)
            return done, outcome
        outcome = DELIVERED
        counts = {"delivered": 0, "refused": 0}  # counted once per round, not per event
        try:
            for done, event in enumerate(events):
                outcome = await self.poster.post(event)
                if outcome.result == "retry":
                    return done, outcome
                counts[outcome.result] += 1
                if outcome.result == "refused":
                    log.warning("%s refused event %s: %s", self.receiver, event.seq, outcome.reason)
            return len(events), outcome
        finally:
            for result, count in counts.items():
                metrics.record_deliveries(kind, result, count)

    def _failed(self, event: Event, outcome: Outcome) -> None:
        """Count the failure and mark the backoff (a thread: a give-up reads the outbox)."""
        receiver = self.receiver
        now = timezone.now()
        metrics.record_deliveries(receiver.kind, "retried")
        give_up = now - timedelta(hours=settings.IMAGES_DELIVERY_GIVE_UP_HOURS)
        if event.created_at < give_up:
            # Tried for long enough: every event as old goes, in one step.
            self.cursor, expired = outbox.expire(receiver.device, self.cursor, give_up)
            metrics.record_deliveries(receiver.kind, "expired", expired)
            log.warning("%s: gave up %d events (%s)", receiver, expired, outcome.reason)
        attempts = receiver.attempts + 1
        backoff = min(2.0 ** (attempts - 1), BACKOFF_MAX_SECONDS) * random.uniform(0.5, 1.0)
        self._save(
            cursor=self.cursor,
            attempts=attempts,
            failing_since=receiver.failing_since or now,
            retry_at=now + timedelta(seconds=max(backoff, outcome.wait)),
            last_error=outcome.reason,
        )

    def _save(self, **fields: object) -> None:
        """Mark the receiver's state changed; :meth:`flush` writes it (the main thread)."""
        self._saved_at = time.monotonic()
        receiver = self.receiver
        with self._unsaved_lock:
            for key, value in fields.items():
                if getattr(receiver, key) != value:
                    setattr(receiver, key, value)
                    self._unsaved[key] = value

    def flush(self) -> None:
        """Write what changed now (this receiver's own last word, when it lets go)."""
        fields = self._take_unsaved()
        if fields:
            self._write(fields)

    def _take_unsaved(self) -> dict[str, object]:
        with self._unsaved_lock:
            fields, self._unsaved = self._unsaved, {}
        return fields

    def _keep_unsaved(self, fields: dict[str, object]) -> None:
        """Put back marks a failed write took; newer marks win."""
        with self._unsaved_lock:
            self._unsaved = {**fields, **self._unsaved}

    def _write(self, fields: dict[str, object]) -> None:
        """If this deliverer still holds the receiver; else the loop is lost (ends at its turn)."""
        updated = Receiver.objects.filter(pk=self.receiver.pk, lease_holder=self.holder).update(
            **fields
        )
        if not updated:
            self.lost = True  # removed, or taken over


def states_written(loops: Sequence[ReceiverLoop], holder: str, *, renew: bool) -> None:
    """What each loop marked changed, and (``renew``) the leases, in one transaction.

    The deliverer's main thread calls this; nothing is written when nothing
    changed and no lease is due. If the database fails, the marks stay for
    the next call.
    """
    taken = [(loop, loop._take_unsaved()) for loop in loops]
    if not renew and not any(fields for _, fields in taken):
        return
    try:
        with transaction.atomic():
            for loop, fields in taken:
                if fields:
                    loop._write(fields)
                if renew and not loop.lost and not take_lease(loop.receiver, holder):
                    loop.lost = True
    except DatabaseError:
        for loop, fields in taken:
            loop._keep_unsaved(fields)
        raise


def take_lease(receiver: Receiver, holder: str) -> bool:
    now = timezone.now()
    taken = (
        Receiver.objects.filter(pk=receiver.pk)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now) | Q(lease_holder=holder))
        .update(lease_until=now + timedelta(seconds=LEASE_SECONDS), lease_holder=holder)
    )
    return bool(taken)
