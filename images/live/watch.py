"""The live views of API.md §13: a device's latest image, and watches.

Front ends translate; the rules are here:

- :func:`image_latest`: a device's newest image by ``timestamp``.
- :func:`watch_open`: who may watch what (:func:`images.access.may_watch`),
  and the :class:`Watch` a stream serves: its subscription first, then the
  replay after ``Last-Event-ID`` from the database, then live events,
  without repeating one the replay already sent. A watch yields
  :class:`~images.live.events.Event` objects; how they go on the wire is
  the front end's business (:mod:`images.http.sse` frames them as
  ``text/event-stream``).

A replay sends at most ``REPLAY_LIMIT`` images, then ends the stream: the
client reconnects with the last id it got and continues from there, so no
stream holds an unbounded backlog.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import Q

from images import access
from images.access import Principal
from images.errors import ImageNotFound, RateLimited
from images.live import holds
from images.live.events import Event, image_event
from images.live.hub import Subscription, hub
from images.models import Image

REPLAY_LIMIT = 1000
_RETRY_AFTER_SECONDS = 5


def image_latest(device_id: str) -> Image:
    """The device's newest image by timestamp (the unique index walked backwards), no bytes."""
    image = (
        Image.objects.defer("data").filter(device_id=device_id).order_by("-timestamp").first()
        if "\x00" not in device_id
        else None
    )
    if image is None:
        raise ImageNotFound("no images from this device", field="deviceId")
    return image


def watch_check(principal: Principal, device_id: str | None) -> None:
    """401 or 403 unless ``principal`` may watch ``device_id`` (``None``: every device)."""
    access.require(
        access.may_watch(principal, device_id),
        principal,
        "watching every device needs a reader token"
        if device_id is None
        else "watching a device needs a reader token or the device's own",
    )


@dataclass
class Watch:
    """One stream's state: what it watches, what it has sent, its subscription."""

    device_id: str | None
    last_event_id: str = ""
    token_id: int | None = None
    subscription: Subscription | None = None
    # Ids the replay sent: a live event for one of them is not sent again.
    replayed: set[str] = field(default_factory=set)
    # The replay stopped at REPLAY_LIMIT: end the stream after it.
    truncated: bool = False
    # What this watch counts against (its client's address, its token), until released.
    held: holds.Held | None = None

    def subscribe(self, loop: object = None) -> None:
        """Subscribe; the replay that follows waits for :meth:`.hub.Hub.wait_listening`."""
        self.subscription = hub().subscribe(
            Subscription(device_id=self.device_id, token_id=self.token_id, loop=loop)  # type: ignore[arg-type]
        )

    def unsubscribe(self) -> None:
        if self.subscription is not None:
            hub().unsubscribe(self.subscription)
            self.subscription = None
        self.release()

    def release(self) -> None:
        """No longer count this watch against its client (idempotent)."""
        if self.held is not None:
            self.held.release()

    def replay(self) -> list[Event]:
        """The events stored after ``last_event_id`` (none without one), oldest first.

        Blocks until the hub hears the channel (at most a few seconds).
        """
        hub().wait_listening()
        after = _replay_start(self.last_event_id)
        if after is None:
            return []
        rows = Image.objects.defer("data").order_by("received_at", "id")
        if self.device_id is not None:
            rows = rows.filter(device_id=self.device_id)
        # The >= bound makes it a range read of the (device_id,) received_at,
        # id index; the OR then only trims the images of that same instant.
        rows = rows.filter(received_at__gte=after.received_at).filter(
            Q(received_at__gt=after.received_at) | Q(received_at=after.received_at, id__gt=after.id)
        )
        images = list(rows[: REPLAY_LIMIT + 1])
        self.truncated = len(images) > REPLAY_LIMIT
        replayed = [image_event(image) for image in images[:REPLAY_LIMIT]]
        self.replayed.update(event.image_id for event in replayed)
        return replayed

    def fresh(self, taken: list[Event]) -> list[Event]:
        """The live events ``taken``, without those the replay sent."""
        if self.replayed:
            return [event for event in taken if event.image_id not in self.replayed]
        return taken


def _replay_start(last_event_id: str) -> Image | None:
    """The image a reconnecting client saw last; ``None`` if it names none we still hold.

    (An image deleted since, by retention for instance, leaves no position
    to resume from: the stream then starts with what comes next.)
    """
    try:
        key = uuid.UUID(last_event_id.strip())
    except ValueError:
        return None
    return Image.objects.only("id", "received_at").filter(id=key).first()


def watch_open(
    principal: Principal,
    device_id: str | None,
    *,
    last_event_id: str = "",
    token_id: int | None = None,
    client: str = "",
) -> Watch:
    """A watch ``principal`` may open (else 401/403, or 429); nothing is subscribed yet.

    At most ``IMAGES_EVENTS_PER_CLIENT`` watches are open at once per client
    address, and per token (API.md §15), in all of ``serve``'s processes
    (:mod:`.holds`); past that :class:`RateLimited`. The watch counts until
    :meth:`Watch.release` (which unsubscribing does).
    """
    watch_check(principal, device_id)
    if device_id is not None and "\x00" in device_id:
        raise ImageNotFound("no images from this device", field="deviceId")
    keys = (f"client {client}",) + (() if token_id is None else (f"token {token_id}",))
    most = settings.IMAGES_EVENTS_PER_CLIENT
    held = holds.take(keys, most)
    if held is None:
        raise RateLimited(
            f"at most {most} event streams may be open at once per client",
            retry_after=_RETRY_AFTER_SECONDS,
        )
    return Watch(device_id=device_id, last_event_id=last_event_id, token_id=token_id, held=held)


def listener_origin(host: str) -> str | None:
    """Where ``serve``'s stream listener is, for a client that reached us at ``host``.

    ``None`` without one (the development server). ``host`` is the request's
    (validated) Host header: the listener is on the same host name, at
    ``IMAGES_EVENTS_PORT``. (The gallery's pages open their streams there;
    the API port serves the same streams in place.)
    """
    if not settings.IMAGES_EVENTS_PORT:
        return None
    name = host if host.endswith("]") else host.rsplit(":", 1)[0]
    return f"http://{name}:{settings.IMAGES_EVENTS_PORT}"
