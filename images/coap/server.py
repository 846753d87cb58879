"""The CoAP site and its server loop (``manage.py runcoap``, ``manage.py serve``)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiocoap import Context, interfaces, resource
from aiocoap.oscore_sitewrapper import OscoreSiteWrapper

from images import discovery
from images.coap import dedup
from images.coap.blockwise import Block1Assembler
from images.coap.live import Devices, LatestImage
from images.coap.resources import (
    Collections,
    DeviceImages,
    DeviceList,
    FrontEnd,
    ImageCollection,
    ImageItem,
    WellKnownCore,
)
from images.coap.security import Access, ServerContexts
from images.storage.cache import BlobCache


class _MountingSite(resource.Site):
    """Tells each resource where it is mounted (for the request log)."""

    def add_resource(self, path: tuple[str, ...], resource: Any) -> None:
        if isinstance(resource, FrontEnd):
            resource.mounted_at = tuple(path)
        super().add_resource(path, resource)


def site_build(*, access: Access) -> resource.Site:
    """Every CoAP resource at its path, sharing one bounded image cache."""
    blobs = BlobCache()
    images_path = tuple(discovery.IMAGES.href.strip("/").split("/"))
    site = _MountingSite()
    site.add_resource((".well-known", "core"), WellKnownCore())
    site.add_resource(("collections",), Collections())
    site.add_resource(
        images_path, ImageCollection(blobs=blobs, assembler=Block1Assembler(), access=access)
    )
    # ImageItem is path-capable, so this serves /collections/images/{id}; the
    # exact path above still goes to ImageCollection.
    site.add_resource(images_path, ImageItem(blobs=blobs, access=access))
    site.add_resource(("devices",), DeviceList(access=access))
    # Path-capable, like ImageItem: /devices/{deviceId}/images, and the
    # observable /devices/{deviceId}/images/latest.
    devices = Devices(
        images=DeviceImages(access=access), latest=LatestImage(blobs=blobs, access=access)
    )
    devices.images.mounted_at = devices.latest.mounted_at = ("devices",)
    site.add_resource(("devices",), devices)
    return site


async def serve(
    host: str,
    port: int,
    *,
    oscore_dir: Path | None = None,
    ready: Callable[[str], None] = print,
) -> None:
    """Serve on UDP ``host``:``port`` until SIGINT or SIGTERM, then shut down cleanly.

    With ``oscore_dir`` (token mode), requests may be protected with the
    OSCORE contexts provisioned there (RFC 8613), and the image resources
    need them (``security.Access``); plain requests still reach discovery.
    ``ready`` is told once the socket is bound. ``::`` means all interfaces,
    IPv4 included (aiocoap's udp6 transport is dual-stack).
    """
    site: interfaces.Resource = site_build(access=Access(oscore_required=oscore_dir is not None))
    contexts = None
    if oscore_dir is not None:
        contexts = ServerContexts(oscore_dir)
        site = OscoreSiteWrapper(site, contexts)
    context = await Context.create_server_context(site, bind=(host, port), transports=["udp6"])
    dedup.install(context)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    mode = (
        "open"
        if contexts is None
        else f"token mode, {len(contexts)} OSCORE context(s) in {oscore_dir}"
    )
    ready(f"CoAP endpoint on udp [{host}]:{port} ({mode})")
    try:
        await stop.wait()
    finally:
        await context.shutdown()
        if contexts is not None:
            contexts.close()
