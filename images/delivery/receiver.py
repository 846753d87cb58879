"""One receiver's deliveries: in order, under a lease, with backoff; a thread of its own.

Its state (cursor, failures) lives in memory while this deliverer holds the
receiver, and is written to the row when it fails, when the lease is
renewed, and otherwise at most every ``CURSOR_SECONDS``: after a crash the
events of those seconds are sent again, which at-least-once allows, and a
busy receiver does not write the database for every round (each write takes
SQLite's one write lock, which an upload may then wait for).
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Sequence
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, close_old_connections
from django.db.models import Q
from django.utils import timezone

from images.delivery import outbox
from images.delivery.feed import Feed
from images.delivery.models import MQTT, Receiver
from images.delivery.mqtt import Broker, Publisher
from images.delivery.outbox import Event
from images.delivery.webhooks import DELIVERED, Outcome, Poster
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
        broker: Broker | None,
        stopping: threading.Event,
    ) -> None:
        self.receiver = receiver
        self.holder = holder
        self.feed = feed
        self.stopping = stopping
        self.lost = False
        self.cursor = receiver.cursor  # in memory; the row's may lag by a second
        self._saved_at = time.monotonic()
        self.publisher = Publisher(broker) if receiver.kind == MQTT and broker is not None else None
        self.poster = Poster(receiver)

    def run(self) -> None:
        seen = self.feed.wakeup.generation
        leased_at = time.monotonic()
        try:
            while not self.stopping.is_set() and not self.lost:
                if time.monotonic() - leased_at > LEASE_SECONDS / 3:
                    if not self._renewed():
                        return  # removed, or taken over after we stalled
                    leased_at = time.monotonic()
                wait = self._due_in()
                if wait > 0:
                    self.stopping.wait(min(wait, POLL_SECONDS))
                    continue
                try:
                    busy = self._round()
                    if time.monotonic() - self._saved_at >= CURSOR_SECONDS:
                        self._save(cursor=self.cursor)
                except DatabaseError as exc:
                    # Waited out like an optimizer's outage; what was sent and
                    # not yet recorded is sent again (at least once).
                    log.warning("deliveries to %s: %s", self.receiver, exc)
                    close_old_connections()
                    self.stopping.wait(random.uniform(0.05, 0.5))
                    continue
                if not busy:
                    seen = self.feed.wakeup.wait(seen, POLL_SECONDS)
        finally:
            self._let_go()

    def _let_go(self) -> None:
        self.poster.close()
        if self.publisher is not None:
            self.publisher.close()
        with contextlib.suppress(DatabaseError):  # else the lease runs out by itself
            if not self.lost:
                self._save(cursor=self.cursor)
            Receiver.objects.filter(pk=self.receiver.pk, lease_holder=self.holder).update(
                lease_until=None, lease_holder=""
            )

    def _renewed(self) -> bool:
        try:
            self._save(cursor=self.cursor)
            return not self.lost and take_lease(self.receiver, self.holder)
        except DatabaseError:
            close_old_connections()
            return True  # try again at the next turn; the lease has time left

    def _due_in(self) -> float:
        retry_at = self.receiver.retry_at
        return 0.0 if retry_at is None else (retry_at - timezone.now()).total_seconds()

    def _round(self) -> bool:
        """Send what is waiting; False when nothing was."""
        shared = self.feed.after(self.cursor, self.receiver.device, BATCH)
        if shared is None:  # behind the feed: read the outbox itself
            head = outbox.head()
            events: Sequence[Event] = outbox.pending(self.receiver.device, self.cursor, BATCH)
            covered = head if len(events) < BATCH else events[-1].seq
        else:
            events, covered = shared
        if not events:
            self.cursor = max(self.cursor, covered)  # nothing of ours up to there
            return False
        done, outcome = self._send(events)
        if done:
            self.cursor = events[done - 1].seq
        if outcome.result == "retry":
            self._failed(events[done], outcome)
            return True
        self.cursor = max(self.cursor, covered)
        if self.receiver.attempts:
            self._save(
                cursor=self.cursor, attempts=0, failing_since=None, retry_at=None, last_error=""
            )
        return True

    def _send(self, events: Sequence[Event]) -> tuple[int, Outcome]:
        """Send in order until one must be retried: how many are done, and the last outcome."""
        kind = self.receiver.kind
        if self.publisher is not None:
            done, outcome = self.publisher.send(list(events))
            metrics.record_deliveries(kind, "delivered", done)
            return done, outcome
        outcome = DELIVERED
        counts = {"delivered": 0, "refused": 0}  # counted once per round, not per event
        try:
            for done, event in enumerate(events):
                outcome = self.poster.post(event)
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
        """Write the receiver's state, if this deliverer still holds it."""
        self._saved_at = time.monotonic()
        receiver = self.receiver
        changed = {key: value for key, value in fields.items() if getattr(receiver, key) != value}
        if not changed:
            return
        updated = Receiver.objects.filter(pk=receiver.pk, lease_holder=self.holder).update(
            **changed
        )
        if not updated:
            self.lost = True  # removed, or taken over: this loop ends at its next turn
            return
        for key, value in changed.items():
            setattr(receiver, key, value)


def take_lease(receiver: Receiver, holder: str) -> bool:
    now = timezone.now()
    taken = (
        Receiver.objects.filter(pk=receiver.pk)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now) | Q(lease_holder=holder))
        .update(lease_until=now + timedelta(seconds=LEASE_SECONDS), lease_holder=holder)
    )
    return bool(taken)
