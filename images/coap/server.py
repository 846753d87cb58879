"""The CoAP site and its server loop (``manage.py runcoap``, ``manage.py serve``)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from aiocoap import Context, resource

from images import discovery
from images.coap.blockwise import BlobCache, Block1Assembler
from images.coap.resources import Collections, ImageCollection, ImageItem, WellKnownCore


def site_build() -> resource.Site:
    """Every CoAP resource at its path, sharing one bounded image cache."""
    blobs = BlobCache()
    images_path = tuple(discovery.IMAGES.href.strip("/").split("/"))
    site = resource.Site()
    site.add_resource((".well-known", "core"), WellKnownCore())
    site.add_resource(("collections",), Collections())
    site.add_resource(images_path, ImageCollection(blobs=blobs, assembler=Block1Assembler()))
    # ImageItem is path-capable, so this serves /collections/images/{id}; the
    # exact path above still goes to ImageCollection.
    site.add_resource(images_path, ImageItem(blobs=blobs))
    return site


async def serve(host: str, port: int, *, ready: Callable[[str], None] = print) -> None:
    """Serve on UDP ``host``:``port`` until SIGINT or SIGTERM, then shut down cleanly.

    ``ready`` is told once the socket is bound. ``::`` means all interfaces,
    IPv4 included (aiocoap's udp6 transport is dual-stack).
    """
    context = await Context.create_server_context(
        site_build(), bind=(host, port), transports=["udp6"]
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    ready(f"CoAP endpoint on udp [{host}]:{port}")
    try:
        await stop.wait()
    finally:
        await context.shutdown()
