"""Delivering: each receiver served by one task, under a lease, in outbox order.

A :class:`Deliverer` (``serve``'s background work, ``manage.py deliver``, or
``runserver``'s thread) claims receivers nobody else holds: a lease in the
receiver's row, renewed while it works, so any number of deliverers in any
number of instances share the receivers and each receiver's events go out
in order. Each receiver is a task of its own on one event loop
(:mod:`.sending`), so a slow or dead receiver delays no other; uploads
never wait for any of them (they only write the outbox).

Events are sent as they commit: the deliverer listens to the live channel
(the same events as the event streams, from any instance) and wakes its
tasks; a poll every second finds the rest (deletions, and any event whose
notice was lost).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connections
from django.db.models import Q
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily

from images import live
from images.delivery import outbox
from images.delivery.feed import Feed
from images.delivery.models import MQTT, WEBHOOK, Receiver
from images.delivery.mqtt import Broker
from images.delivery.receiver import (
    LEASE_SECONDS,
    POLL_SECONDS,
    ReceiverLoop,
    states_written,
    take_lease,
)
from images.delivery.sending import Sending

log = logging.getLogger(__name__)

CLAIM_SECONDS = 1.0
TRIM_SECONDS = 60.0
# The receivers' states (cursors, failures) are written at most this often.
SAVE_SECONDS = 1.0
# The outbox is read at most this often while events keep coming (as the
# event-stream hub reads its channel): a round then carries many events.
PACE_SECONDS = 0.1


class Deliverer:
    """``idle``: the receivers' event loop in Linux's idle scheduling class, as ``serve`` runs it.

    This thread, which writes to the database, stays where it was started
    (``deliver --idle`` puts it at nice 19): see :mod:`.receiver` for why.
    """

    def __init__(self, *, idle: bool = False) -> None:
        self.idle = idle
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"[:100]
        self.feed = Feed()
        self.broker = Broker.parse(settings.IMAGES_MQTT) if settings.IMAGES_MQTT else None
        self._sending: Sending | None = None  # started with the first receiver
        self._tasks: dict[int, concurrent.futures.Future[None]] = {}
        self._loops: dict[int, ReceiverLoop] = {}

    def run(self, stopping: threading.Event) -> None:
        """Deliver until ``stopping`` is set; then let go of every receiver."""
        subscription: live.Subscription | None = None
        claimed_at = trimmed_at = read_at = saved_at = renewed_at = -TRIM_SECONDS
        mqtt_ready = False
        try:
            while not stopping.is_set():
                now = time.monotonic()
                try:
                    if not mqtt_ready:
                        self._ensure_mqtt()
                        mqtt_ready = True
                    if now - claimed_at >= CLAIM_SECONDS:
                        self._claim(stopping)
                        claimed_at = now
                    if now - trimmed_at >= TRIM_SECONDS:
                        outbox.trim()
                        trimmed_at = now
                    if now - saved_at >= SAVE_SECONDS:
                        renew = now - renewed_at >= LEASE_SECONDS / 3
                        states_written(list(self._loops.values()), self.holder, renew=renew)
                        saved_at = now
                        renewed_at = now if renew else renewed_at
                    if self._sending is not None and self._tasks and self.feed.refresh():
                        self._sending.ring()
                    self._forget_delivered()
                    read_at = time.monotonic()
                except DatabaseError:
                    log.warning("deliveries: the database is not available", exc_info=True)
                    close_old_connections()
                subscription = self._listen(subscription)
                self._wait(subscription, stopping)
                # Under a stream of uploads, one read per PACE_SECONDS.
                stopping.wait(max(0.0, read_at + PACE_SECONDS - time.monotonic()))
        finally:
            if subscription is not None:
                live.hub().unsubscribe(subscription)
            if self._sending is not None:
                self._sending.ring()
                concurrent.futures.wait(list(self._tasks.values()))
                self._sending.stop()

    # --- receivers ---

    def _forget_delivered(self) -> None:
        cursors = [loop.cursor for loop in list(self._loops.values())]
        if cursors:
            self.feed.forget_until(min(cursors))

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
        for key, task in list(self._tasks.items()):
            if task.done():
                del self._tasks[key]
        kinds = [WEBHOOK] + ([MQTT] if self.broker is not None else [])
        now = timezone.now()
        free = Receiver.objects.filter(kind__in=kinds).filter(
            Q(lease_until__isnull=True) | Q(lease_until__lt=now) | Q(lease_holder=self.holder)
        )
        for receiver in free.exclude(pk__in=list(self._tasks)):
            if take_lease(receiver, self.holder):
                if self._sending is None:
                    self._sending = Sending(idle=self.idle)
                loop = self._loops[receiver.pk] = ReceiverLoop(
                    receiver,
                    holder=self.holder,
                    feed=self.feed,
                    sending=self._sending,
                    broker=self.broker,
                    stopping=stopping,
                )
                self._tasks[receiver.pk] = self._sending.start(self._serve(loop))

    async def _serve(self, loop: ReceiverLoop) -> None:
        try:
            await loop.run()
        except Exception:  # noqa: BLE001 - a receiver's failure must not end the others
            log.exception("deliveries to %s stopped", loop.receiver)
        finally:
            self._loops.pop(loop.receiver.pk, None)

    # --- waking ---

    def _listen(self, subscription: live.Subscription | None) -> live.Subscription | None:
        if not self._tasks:
            if subscription is not None:
                live.hub().unsubscribe(subscription)
            return None
        if subscription is None or subscription.closed:
            if subscription is not None:
                live.hub().unsubscribe(subscription)
            subscription = live.hub().subscribe(live.Subscription(device_id=None))
        return subscription

    def _wait(self, subscription: live.Subscription | None, stopping: threading.Event) -> None:
        """Until an image event arrives (any instance), or a poll's interval (deletions)."""
        if subscription is None:
            stopping.wait(POLL_SECONDS)
            return
        with contextlib.suppress(live.Closed):  # resubscribed at the next turn
            subscription.next_blocking(POLL_SECONDS)


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
