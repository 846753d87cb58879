"""Delivering: each receiver served by one thread, under a lease, in outbox order.

A :class:`Deliverer` (``serve``'s background work, ``manage.py deliver``, or
``runserver``'s thread) claims receivers nobody else holds: a lease in the
receiver's row, renewed while it works, so any number of deliverers in any
number of instances share the receivers and each receiver's events go out
in order. One thread per receiver keeps a slow or dead receiver from
delaying another; uploads never wait for any of them (they only write the
outbox).

Events are sent as they commit: the deliverer listens to the live channel
(the same events as the event streams, from any instance) and wakes its
threads; a poll every second finds the rest (deletions, and any event whose
notice was lost).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import threading
from collections.abc import Iterator, Sequence
from datetime import timedelta

import urllib3
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connections
from django.db.models import Q
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily

from images import live
from images.delivery import outbox, webhooks
from images.delivery.models import MQTT, WEBHOOK, OutboxEvent, Receiver
from images.delivery.mqtt import Broker, Publisher
from images.delivery.webhooks import Outcome
from ops import metrics

log = logging.getLogger(__name__)

LEASE_SECONDS = 10.0
POLL_SECONDS = 1.0
TRIM_SECONDS = 60.0
BATCH = 100
# Backoff after the n-th failure in a row: 1 s, 2 s, 4 s... at most 10 minutes.
BACKOFF_MAX_SECONDS = 600.0


class Wakeup:
    """A generation count the deliverer raises when events may be waiting."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._generation = 0

    def ring(self) -> None:
        with self._condition:
            self._generation += 1
            self._condition.notify_all()

    def wait(self, seen: int, timeout: float) -> int:
        with self._condition:
            self._condition.wait_for(lambda: self._generation != seen, timeout)
            return self._generation

    @property
    def generation(self) -> int:
        with self._condition:
            return self._generation


class Deliverer:
    def __init__(self, *, batch: int = BATCH) -> None:
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"[:100]
        self.batch = batch
        self.wakeup = Wakeup()
        self.broker = Broker.parse(settings.IMAGES_MQTT) if settings.IMAGES_MQTT else None
        self._threads: dict[int, threading.Thread] = {}

    def run(self, stopping: threading.Event) -> None:
        """Deliver until ``stopping`` is set; then let go of every receiver."""
        subscription: live.Subscription | None = None
        trimmed_at = 0.0
        try:
            while not stopping.is_set():
                try:
                    self._ensure_mqtt()
                    self._claim(stopping)
                    if timezone.now().timestamp() - trimmed_at > TRIM_SECONDS:
                        outbox.trim()
                        trimmed_at = timezone.now().timestamp()
                except DatabaseError:
                    log.warning("deliveries: the database is not available", exc_info=True)
                    close_old_connections()
                subscription = self._listen(subscription)
                self._wait(subscription, stopping)
        finally:
            if subscription is not None:
                live.hub().unsubscribe(subscription)
            self.wakeup.ring()
            for thread in list(self._threads.values()):
                thread.join()

    # --- receivers ---

    def _ensure_mqtt(self) -> None:
        """The broker of ``IMAGES_MQTT`` as a receiver (one per installation)."""
        if self.broker is None:
            return
        url = self.broker.public_url
        Receiver.objects.filter(kind=MQTT).exclude(url=url).delete()
        if not Receiver.objects.filter(kind=MQTT, url=url).exists():
            Receiver.objects.get_or_create(kind=MQTT, url=url, device="", defaults={"cursor": 0})
            outbox.forget_wanted()

    def _claim(self, stopping: threading.Event) -> None:
        for key, thread in list(self._threads.items()):
            if not thread.is_alive():
                del self._threads[key]
        kinds = [WEBHOOK] + ([MQTT] if self.broker is not None else [])
        now = timezone.now()
        free = Receiver.objects.filter(kind__in=kinds).filter(
            Q(lease_until__isnull=True) | Q(lease_until__lt=now) | Q(lease_holder=self.holder)
        )
        for receiver in free.exclude(pk__in=list(self._threads)):
            if _take_lease(receiver, self.holder):
                thread = threading.Thread(
                    target=self._serve,
                    args=(receiver, stopping),
                    name=f"deliver-{receiver.pk}",
                    daemon=True,
                )
                self._threads[receiver.pk] = thread
                thread.start()

    def _serve(self, receiver: Receiver, stopping: threading.Event) -> None:
        try:
            ReceiverLoop(receiver, self, stopping).run()
        except Exception:  # noqa: BLE001 - a receiver's failure must not end the others
            log.exception("deliveries to %s stopped", receiver)
        finally:
            close_old_connections()

    # --- waking ---

    def _listen(self, subscription: live.Subscription | None) -> live.Subscription | None:
        if not self._threads:
            if subscription is not None:
                live.hub().unsubscribe(subscription)
            return None
        if subscription is None or subscription.closed:
            if subscription is not None:
                live.hub().unsubscribe(subscription)
            subscription = live.hub().subscribe(live.Subscription(device_id=None))
        return subscription

    def _wait(self, subscription: live.Subscription | None, stopping: threading.Event) -> None:
        if subscription is None:
            stopping.wait(POLL_SECONDS)
            return
        try:
            events = subscription.next_blocking(POLL_SECONDS)
        except live.Closed:
            events = None
        if events:
            self.wakeup.ring()


class ReceiverLoop:
    """One receiver's deliveries, in order, for as long as this deliverer holds its lease."""

    def __init__(self, receiver: Receiver, deliverer: Deliverer, stopping: threading.Event):
        self.receiver = receiver
        self.deliverer = deliverer
        self.stopping = stopping
        self.lost = False
        self.pool = urllib3.PoolManager(num_pools=2, maxsize=1)
        self.publisher = (
            Publisher(deliverer.broker)
            if receiver.kind == MQTT and deliverer.broker is not None
            else None
        )

    def run(self) -> None:
        seen = self.deliverer.wakeup.generation
        leased_at = timezone.now()
        try:
            while not self.stopping.is_set() and not self.lost:
                if (timezone.now() - leased_at).total_seconds() > LEASE_SECONDS / 3:
                    if not self._renewed():
                        return  # removed, or taken over after we stalled
                    leased_at = timezone.now()
                wait = self._due_in()
                if wait > 0:
                    self.stopping.wait(min(wait, POLL_SECONDS))
                    continue
                try:
                    busy = self._round()
                except DatabaseError as exc:
                    # Waited out like an optimizer's outage; what was sent and
                    # not yet recorded is sent again (at least once).
                    log.warning("deliveries to %s: %s", self.receiver, exc)
                    close_old_connections()
                    self.stopping.wait(random.uniform(0.05, 0.5))
                    continue
                if not busy:
                    seen = self.deliverer.wakeup.wait(seen, POLL_SECONDS)
        finally:
            self.pool.clear()
            if self.publisher is not None:
                self.publisher.close()
            with contextlib.suppress(DatabaseError):  # else the lease runs out by itself
                Receiver.objects.filter(
                    pk=self.receiver.pk, lease_holder=self.deliverer.holder
                ).update(lease_until=None, lease_holder="")

    def _renewed(self) -> bool:
        try:
            return _take_lease(self.receiver, self.deliverer.holder)
        except DatabaseError:
            close_old_connections()
            return True  # try again at the next turn; the lease has time left

    def _due_in(self) -> float:
        retry_at = self.receiver.retry_at
        return 0.0 if retry_at is None else (retry_at - timezone.now()).total_seconds()

    def _round(self) -> bool:
        """Send what is waiting; False when nothing was."""
        receiver = self.receiver
        head = outbox.head()
        events = outbox.pending(receiver, self.deliverer.batch)
        if not events:
            if head > receiver.cursor:  # nothing of ours up to head: skip past it
                self._save(cursor=head)
            return False
        done, outcome = self._send(events)
        cursor = events[done - 1].seq if done else receiver.cursor
        if outcome.result == "retry":
            self._failed(events[done], outcome, cursor)
        else:
            if len(events) < self.deliverer.batch:
                cursor = max(cursor, head)
            self._save(cursor=cursor, attempts=0, failing_since=None, retry_at=None, last_error="")
        return True

    def _send(self, events: Sequence[OutboxEvent]) -> tuple[int, Outcome]:
        """Send in order until one must be retried: how many are done, and the last outcome."""
        kind = self.receiver.kind
        if self.publisher is not None:
            done, outcome = self.publisher.send(list(events))
            metrics.record_deliveries(kind, "delivered", done)
            return done, outcome
        outcome = webhooks.DELIVERED
        for done, event in enumerate(events):
            outcome = webhooks.post(self.pool, self.receiver, event)
            if outcome.result == "retry":
                return done, outcome
            metrics.record_deliveries(kind, outcome.result)
            if outcome.result == "refused":
                log.warning("%s refused event %s: %s", self.receiver, event.seq, outcome.reason)
        return len(events), outcome

    def _failed(self, event: OutboxEvent, outcome: Outcome, cursor: int) -> None:
        receiver = self.receiver
        now = timezone.now()
        metrics.record_deliveries(receiver.kind, "retried")
        give_up = now - timedelta(hours=settings.IMAGES_DELIVERY_GIVE_UP_HOURS)
        if event.created_at < give_up:
            # Tried for long enough: every event as old goes, in one step.
            cursor, expired = outbox.expire(receiver, give_up)
            metrics.record_deliveries(receiver.kind, "expired", expired)
            log.warning(
                "%s: gave up %d events after failing (%s)", receiver, expired, outcome.reason
            )
        attempts = receiver.attempts + 1
        backoff = min(2.0 ** (attempts - 1), BACKOFF_MAX_SECONDS) * random.uniform(0.5, 1.0)
        self._save(
            cursor=cursor,
            attempts=attempts,
            failing_since=receiver.failing_since or now,
            retry_at=now + timedelta(seconds=max(backoff, outcome.wait)),
            last_error=outcome.reason,
        )

    def _save(self, **fields: object) -> None:
        """Write the receiver's state, if this deliverer still holds it."""
        receiver = self.receiver
        changed = {key: value for key, value in fields.items() if getattr(receiver, key) != value}
        if not changed:
            return
        updated = Receiver.objects.filter(
            pk=receiver.pk, lease_holder=self.deliverer.holder
        ).update(**changed)
        if not updated:
            self.lost = True  # removed, or taken over: this loop ends at its next turn
            return
        for key, value in changed.items():
            setattr(receiver, key, value)


def _take_lease(receiver: Receiver, holder: str) -> bool:
    now = timezone.now()
    taken = (
        Receiver.objects.filter(pk=receiver.pk)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now) | Q(lease_holder=holder))
        .update(lease_until=now + timedelta(seconds=LEASE_SECONDS), lease_holder=holder)
    )
    return bool(taken)


def start_delivering(stopping: threading.Event) -> threading.Thread:
    """A deliverer in a daemon thread (``runserver``: nothing else to start)."""

    def run() -> None:
        try:
            Deliverer().run(stopping)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, name="deliverer", daemon=True)
    thread.start()
    return thread


class DeliveryCollector:
    """``images_delivery_backlog`` and ``images_delivery_lag_seconds`` per receiver kind.

    Read from the database when ``/metrics`` is (receivers are shared by
    every deliverer of every instance): events each receiver has still to
    be sent, and the age of the oldest.
    """

    def collect(self) -> Iterator[GaugeMetricFamily]:
        backlog = GaugeMetricFamily(
            "images_delivery_backlog", "Events still to be sent, over receivers", labels=["kind"]
        )
        lag = GaugeMetricFamily(
            "images_delivery_lag_seconds",
            "Age of the oldest event still to be sent",
            labels=["kind"],
        )
        try:
            figures = outbox.backlog()
        except DatabaseError:
            return
        now = timezone.now()
        for kind in (WEBHOOK, MQTT):
            waiting, oldest = figures.get(kind, (0, None))
            backlog.add_metric([kind], waiting)
            lag.add_metric([kind], 0.0 if oldest is None else (now - oldest).total_seconds())
        yield backlog
        yield lag
