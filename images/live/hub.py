"""The process's fan-out: one channel listener, every watcher's subscription (API.md §13).

Each process that has watchers runs one listener thread, the :class:`Hub`,
which reads the channel (:mod:`images.live.channels`) and hands each
:class:`~images.live.events.Event` to the :class:`Subscription` of every
watcher it concerns: an event stream or the CoAP resource that notifies
observers.

Every subscription is bounded: a watcher that falls more than
``QUEUE_LIMIT`` events behind is closed rather than buffered without end;
it reconnects and replays what it missed from the database
(:mod:`images.live.watch`). So is a gap: when the listener loses its channel
(the database restarted), every subscription is closed, for the same
reason. Revoking a token closes the streams it opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from math import inf as INFINITY
from typing import Any

from images.live import channels
from images.live.events import REVOKED, Event

log = logging.getLogger(__name__)

# How many undelivered events one watcher may hold before it is closed.
QUEUE_LIMIT = 256


class Closed(Exception):
    """The subscription ended: revoked, behind, or the channel had a gap."""


class Subscription:
    """What one watcher receives: the events of one device (or of all), bounded.

    An asyncio watcher passes its ``loop``: events are handed over on it. A
    thread (the development server's streams) waits with :meth:`next_blocking`.
    """

    def __init__(
        self,
        *,
        device_id: str | None,
        token_id: int | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.device_id = device_id
        self.token_id = token_id
        self.loop = loop
        self.closed: str | None = None
        self._events: deque[Event] = deque()
        self._ready: asyncio.Event | None = asyncio.Event() if loop is not None else None
        self._condition = threading.Condition() if loop is None else None
        # The keep-alive timer of an asyncio watcher: see next().
        self._quiet_since = loop.time() if loop is not None else 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._quiet = False

    def put(self, events: list[Event]) -> None:
        """Called on the subscription's own loop (or from the hub's thread when it has none).

        A revocation comes alone, as ``[event]``.
        """
        if self._condition is not None:
            with self._condition:
                self._put(events)
                self._condition.notify()
        else:
            self._put(events)
            assert self._ready is not None
            self._ready.set()

    def close(self, reason: str) -> None:
        if self._condition is not None:
            with self._condition:
                self.closed = self.closed or reason
                self._condition.notify()
        else:
            self.closed = self.closed or reason
            self.stop_timer()
            assert self._ready is not None
            self._ready.set()

    def _put(self, events: list[Event]) -> None:
        if self.closed:
            return
        if events[0].kind == REVOKED:
            self.closed = "revoked"
        elif len(self._events) + len(events) > QUEUE_LIMIT:
            self.closed = "behind"
            self._events.clear()
        else:
            self._events.extend(events)

    async def next(self, timeout: float) -> list[Event] | None:
        """Every event waiting (at least one); ``None`` after ``timeout`` seconds without any.

        Raises :class:`Closed` once the subscription ended and nothing waits.
        The ``timeout`` counts from the previous answer, on one timer that
        re-arms itself when it finds the watcher had events since: a timer
        set and cancelled for each wait was a third of the listener's CPU.
        """
        assert self.loop is not None
        assert self._ready is not None
        if not self._events and not self.closed:
            if self._timer is None:
                self._timer = self.loop.call_at(
                    self._quiet_since + timeout, self._quiet_check, timeout
                )
            if not self._quiet:
                self._ready.clear()
                await self._ready.wait()
        taken = self._take()
        self._quiet = False
        self._quiet_since = self.loop.time()
        return taken

    def _quiet_check(self, timeout: float) -> None:
        assert self.loop is not None
        assert self._ready is not None
        self._timer = None
        if self.closed:
            return
        deadline = self._quiet_since + timeout
        # (The loop runs a timer up to its clock's resolution early.)
        if self.loop.time() + 0.01 >= deadline:
            self._quiet = True
            self._ready.set()
        else:
            self._timer = self.loop.call_at(deadline, self._quiet_check, timeout)

    def stop_timer(self) -> None:
        """On the subscription's loop, once it is no longer read."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def next_blocking(self, timeout: float) -> list[Event] | None:
        assert self._condition is not None
        with self._condition:
            if not self._events and not self.closed:
                self._condition.wait(timeout)
            return self._take()

    def _take(self) -> list[Event] | None:
        if self._events:
            taken = list(self._events)
            self._events.clear()
            return taken
        if self.closed:
            raise Closed(self.closed)
        return None


class Hub:
    """The process's listener: one channel subscription, fanned out to every watcher.

    The listener thread starts with the first subscription and stops a few
    seconds after the last one ends (so a process nobody watches holds no
    ``LISTEN`` connection). Asyncio watchers get each batch of events
    through one ``call_soon_threadsafe`` per event loop, not one per watcher.

    The channel is read at most every ``PACE_SECONDS`` (:meth:`pace`): an
    event after a quiet spell is handed over at once; under a stream of
    uploads, each watcher wakes once for what came meanwhile and sends it
    in one write. Waking for each event cost, with a hundred streams on
    ``/events``, as much CPU as the uploads (docs/live.md: the measurement).
    """

    # How long the listener outlives its last watcher.
    LINGER_SECONDS = 2.0
    PACE_SECONDS = 0.1

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watchers: dict[str | None, set[Subscription]] = {}
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._empty_since: float | None = None
        self._handed_over = -INFINITY

    def subscribe(self, subscription: Subscription) -> Subscription:
        """Start delivering to ``subscription`` (see :meth:`wait_listening`)."""
        with self._lock:
            self._watchers.setdefault(subscription.device_id, set()).add(subscription)
            self._empty_since = None
            if self._thread is None:
                self._ready.clear()
                self._thread = threading.Thread(target=self._listen, name="events", daemon=True)
                self._thread.start()
        return subscription

    def wait_listening(self, timeout: float = 5.0) -> bool:
        """Wait until the channel is heard: what is published from then on reaches this process.

        A watcher that replays from the database first waits for this, so
        nothing committed between its replay and its first live event is lost.
        """
        return self._ready.wait(timeout)

    def listening_now(self) -> bool:
        return self._ready.is_set()

    def unsubscribe(self, subscription: Subscription) -> None:
        """(An asyncio watcher's, on its loop.)"""
        subscription.stop_timer()
        with self._lock:
            watchers = self._watchers.get(subscription.device_id)
            if watchers is not None:
                watchers.discard(subscription)
                if not watchers:
                    del self._watchers[subscription.device_id]
            if not self._watchers:
                self._empty_since = time.monotonic()

    def count(self) -> int:
        with self._lock:
            return sum(len(watchers) for watchers in self._watchers.values())

    # --- What the channel's listen loop calls (images.live.channels.Listener) ---

    def listening(self) -> None:
        self._ready.set()

    def idle(self) -> bool:
        with self._lock:
            since = self._empty_since
            return since is not None and time.monotonic() - since > self.LINGER_SECONDS

    def _listen(self) -> None:
        while True:
            try:
                channels.current().listen(self)
            except Exception:  # noqa: BLE001 - a listener that cannot start: watchers resync
                log.exception("the event listener failed")
                self.gap()
                time.sleep(1.0)
            with self._lock:
                if self._empty_since is not None:
                    self._thread = None
                    self._ready.clear()
                    return

    def pace(self) -> None:
        """The channel has events to read: wait until ``PACE_SECONDS`` after the last hand-over."""
        wait = self._handed_over + self.PACE_SECONDS - time.monotonic()
        if wait > 0:
            time.sleep(wait)

    def deliver(self, payloads: list[bytes]) -> None:
        """Hand events to their watchers (the listener thread calls this)."""
        events = []
        for payload in payloads:
            try:
                events.append(Event.decode(payload))
            except (ValueError, KeyError, TypeError):
                log.warning("ignored a malformed event payload")
        per_loop: dict[Any, list[tuple[Subscription, list[Event]]]] = {}
        with self._lock:
            for watcher, taken in self._fan_out(events):
                per_loop.setdefault(watcher.loop, []).append((watcher, taken))
        self._handed_over = time.monotonic()
        for loop, deliveries in per_loop.items():
            if loop is None:
                _hand_over(deliveries)
            else:
                with contextlib.suppress(RuntimeError):  # the loop has closed
                    loop.call_soon_threadsafe(_hand_over, deliveries)

    def _fan_out(self, events: list[Event]) -> Iterator[tuple[Subscription, list[Event]]]:
        """Each watcher with its share of ``events``, in order, one list per run of images.

        Images are grouped by device, so that each watcher gets one list
        (shared with every watcher of the same device, or of all), not an
        append per event per watcher. A revocation goes alone to the
        watchers of its tokens.
        """
        run: list[Event] = []
        for event in [*events, None]:
            if event is not None and event.kind != REVOKED:
                run.append(event)
                continue
            if run:
                by_device: dict[str, list[Event]] = {}
                for image in run:
                    by_device.setdefault(image.device_id, []).append(image)
                for device_id, images in by_device.items():
                    for watcher in self._watchers.get(device_id, ()):
                        yield watcher, images
                for watcher in self._watchers.get(None, ()):
                    yield watcher, run
                run = []
            if event is not None:
                for watchers in self._watchers.values():
                    for watcher in watchers:
                        if watcher.token_id in event.token_ids:
                            yield watcher, [event]

    def gap(self) -> None:
        """The channel was lost for a while: every watcher must resynchronise from the database."""
        with self._lock:
            everyone = [w for watchers in self._watchers.values() for w in watchers]
        for watcher in everyone:
            if watcher.loop is None:
                watcher.close("gap")
            elif not watcher.loop.is_closed():
                watcher.loop.call_soon_threadsafe(watcher.close, "gap")


def _hand_over(deliveries: list[tuple[Subscription, list[Event]]]) -> None:
    for watcher, events in deliveries:
        watcher.put(events)


_hub: Hub | None = None
_hub_lock = threading.Lock()


def hub() -> Hub:
    """This process's hub (created on first use)."""
    global _hub
    with _hub_lock:
        if _hub is None:
            _hub = Hub()
        return _hub
