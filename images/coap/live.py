"""CoAP ``/devices/{deviceId}/images/latest``, observable (RFC 7641; API.md §13).

A registration (GET with Observe: 0) gets the device's newest image, then a
notification each time a newer one is stored, by any front end of any
instance: the process's :class:`images.live.Hub` tells, this resource
looks the image up once per device and triggers its observers, and aiocoap
renders each notification (the first block of a large image, with Size2;
the client fetches the rest with Block2 as for any download).

aiocoap ends an observation when the client answers a notification with
RST or leaves a confirmable one unacknowledged; this resource forgets it
then. Registrations are capped per client and in total
(``IMAGES_OBSERVE_PER_PEER``, ``IMAGES_OBSERVE_TOTAL``): past a cap the
request is answered without Observe (RFC 7641 §4.1), a plain GET.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from aiocoap import Message, interfaces, resource
from aiocoap.protocol import ServerObservation
from django.conf import settings

from images import live
from images.access import ANONYMOUS
from images.coap.edge import in_worker
from images.coap.resources import DeviceImages, FrontEnd, ImageDownloads
from images.errors import ImageNotFound
from images.models import Image

log = logging.getLogger(__name__)

# A plain GET of ``latest``: fresh for a second (HTTP says no-cache). An
# observed one stays fresh until a notification says otherwise (RFC 7641 §3.2).
LATEST_MAX_AGE = 1
OBSERVED_MAX_AGE = 3600


class Observers:
    """Who observes which device, bounded per client and in total."""

    def __init__(self, *, per_peer: int, total: int) -> None:
        self.per_peer = per_peer
        self.total = total
        self.by_device: dict[str, set[ServerObservation]] = {}
        self._per_peer: dict[str, int] = {}
        self.count = 0

    def add(self, device_id: str, peer: str, observation: ServerObservation) -> bool:
        if self.count >= self.total or self._per_peer.get(peer, 0) >= self.per_peer:
            return False
        self.by_device.setdefault(device_id, set()).add(observation)
        self._per_peer[peer] = self._per_peer.get(peer, 0) + 1
        self.count += 1

        def forget() -> None:
            watchers = self.by_device.get(device_id)
            if watchers is None or observation not in watchers:
                return
            watchers.discard(observation)
            if not watchers:
                del self.by_device[device_id]
            self._per_peer[peer] -= 1
            if not self._per_peer[peer]:
                del self._per_peer[peer]
            self.count -= 1

        observation.accept(forget)
        return True


class LatestImage(ImageDownloads, interfaces.ObservableResource):
    """The newest image of the device in the path (``[deviceId, "images", "latest"]``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.observers = Observers(
            per_peer=settings.IMAGES_OBSERVE_PER_PEER, total=settings.IMAGES_OBSERVE_TOTAL
        )
        # Each observed device's newest image, as last looked up: notifications
        # are rendered from it, not from one query per observer.
        self._current: dict[str, Image] = {}
        self._listener: asyncio.Task | None = None

    @staticmethod
    def device_of(path: tuple[str, ...]) -> str | None:
        if len(path) == 3 and path[1:] == ("images", "latest"):
            return path[0]
        return None

    async def add_observation(self, request: Message, observation: ServerObservation) -> None:
        device_id = self.device_of(tuple(request.opt.uri_path))
        if device_id is None:
            decline(observation)
            return
        try:
            principal = self._access.authenticate(request) or ANONYMOUS
            live.watch_check(principal, device_id)
        except Exception:  # noqa: BLE001 - the render that follows answers the refusal
            decline(observation)
            return
        if self.observers.add(device_id, request.remote.hostinfo, observation):
            self._listen()
        else:
            decline(observation)

    async def render_get(self, request: Message) -> Message:
        device_id = self.device_of(tuple(request.opt.uri_path))
        if device_id is None:
            raise ImageNotFound("no resource at this path")
        principal = self._access.authenticate(request) or ANONYMOUS
        live.watch_check(principal, device_id)
        observed = request.opt.observe == 0 and device_id in self.observers.by_device
        image = self._current.get(device_id) if observed and request.opt.etag is None else None
        if image is None:
            image = await in_worker(live.image_latest)(device_id)
            if observed:
                self._current[device_id] = image
        response = await self.representation(
            request, image, max_age=OBSERVED_MAX_AGE if observed else LATEST_MAX_AGE
        )
        # Where the image is for good (RFC 7252 has no Content-Location: a
        # link-format client reads it from the metadata's href instead).
        return response

    def _listen(self) -> None:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(self._follow())

    async def _follow(self) -> None:
        """Follow the hub for as long as anyone observes; notify on each newer image."""
        loop = asyncio.get_running_loop()
        while self.observers.count:
            hub = live.hub()
            subscription = hub.subscribe(live.Subscription(device_id=None, loop=loop))
            try:
                if not hub.listening_now():
                    await asyncio.to_thread(hub.wait_listening)
                # Anything stored while we were not subscribed (a gap): look again.
                await self._refresh(list(self.observers.by_device))
                while self.observers.count:
                    # Several events of one device (a burst): one look at its latest.
                    newest: dict[str, datetime] = {}
                    for event in await subscription.next(60) or ():
                        if event.device_id in self.observers.by_device:
                            stamp = datetime.fromisoformat(event.timestamp)
                            newest[event.device_id] = max(stamp, newest.get(event.device_id, stamp))
                    for device_id, stamp in newest.items():
                        await self._refresh([device_id], newer_than=stamp)
            except live.Closed:
                continue
            finally:
                hub.unsubscribe(subscription)
        self._current.clear()

    async def _refresh(self, device_ids: list[str], *, newer_than: datetime | None = None) -> None:
        for device_id in device_ids:
            current = self._current.get(device_id)
            if newer_than is not None and current is not None and current.timestamp >= newer_than:
                continue  # an older image, stored late: latest is unchanged
            try:
                image = await in_worker(live.image_latest)(device_id)
            except Exception:  # noqa: BLE001 - deleted meanwhile, database away: next event
                log.info("could not look up the latest image of %r", device_id, exc_info=True)
                continue
            self._current[device_id] = image
            if current is None or (image.id == current.id and image.sha256 == current.sha256):
                continue  # unchanged (or first seen: the registration answered it)
            for observation in list(self.observers.by_device.get(device_id, ())):
                observation.trigger()


class Devices(FrontEnd, resource.PathCapable, interfaces.ObservableResource):
    """Everything under ``/devices/``: a device's listing, or its observable ``latest``."""

    def __init__(self, *, images: DeviceImages, latest: LatestImage) -> None:
        super().__init__()
        self.images = images
        self.latest = latest

    def _target(self, request: Message) -> FrontEnd:
        device_id = LatestImage.device_of(tuple(request.opt.uri_path))
        return self.images if device_id is None else self.latest

    async def add_observation(self, request: Message, observation: ServerObservation) -> None:
        if self._target(request) is self.latest:
            await self.latest.add_observation(request, observation)
        else:
            decline(observation)

    async def render(self, request: Message) -> Message:
        return await self._target(request).render(request)


def decline(observation: ServerObservation) -> None:
    """Answer the registration as a plain request: no observation.

    aiocoap 0.4 cancels every registration it rendered, accepted or not
    (``ObservableResource._render_to_pipe``); a no-op cancellation and an
    early deregistration make its first answer the last, refusals included.
    """
    observation.accept(lambda: None)
    observation.deregister()
