"""The links this service advertises (RFC 6690), declared once, as data.

HTTP and CoAP render the same list (CoAP without the HTTP-only listings);
``/collections`` shows the part under ``/collections/``. The first link is
the original prototype's, unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from urllib.parse import quote

from aiocoap.numbers.contentformat import ContentFormat
from django.db import DatabaseError

from formats.linkformat import Filter, Link, apply_filters
from formats.rfc3339 import format_timestamp
from images import access
from images.models import Image

IMAGES = Link("/collections/images", (("rt", "simple.act"), ("if", "core.b")))
# A link list (``if=core.ll``, the CoRE interfaces' name for it): one link per
# device, each to that device's own listing, a link list of its images in turn.
DEVICES = Link("/devices", (("if", "core.ll"),))

LINKS: tuple[Link, ...] = (IMAGES, DEVICES)


# How many devices' observable ``latest`` discovery lists; the rest are found
# through ``/devices`` (a fleet's discovery document stays a few blocks).
LATEST_LINKS_MAX = 1000


def links_discover(filters: Sequence[Filter] = ()) -> list[Link]:
    """Links for ``/.well-known/core``, narrowed by every filter.

    HTTP and CoAP serve the same resources, so both advertise these links:
    the static ones, then each device's observable ``latest`` (API.md §13;
    the first ``LATEST_LINKS_MAX`` devices by id). In token mode device ids
    are not public, and discovery is: it lists the static links only.
    """
    links = list(LINKS)
    if not access.rules_apply():
        devices = (
            Image.objects.order_by("device_id")
            .values_list("device_id", flat=True)
            .distinct()[:LATEST_LINKS_MAX]
        )
        # While the database is away, discovery still answers, without them.
        with contextlib.suppress(DatabaseError):
            links += [latest_link(device_id) for device_id in devices]
    return apply_filters(links, filters)


def latest_link(device_id: str) -> Link:
    """A device's newest image, observable (``obs``, RFC 7641 §6)."""
    href = f"/devices/{quote(device_id, safe='')}/images/latest"
    return Link(href, (("rt", "image.latest"), ("obs", None), ("title", device_id)))


def links_collections() -> list[Link]:
    """Links for ``/collections``: the collections only."""
    return [link for link in LINKS if link.href.startswith("/collections/")]


def content_format(media_type: str) -> int | None:
    """The CoAP Content-Format number of a media type, if IANA registered one."""
    try:
        return int(ContentFormat.by_media_type(media_type))
    except KeyError:
        return None


def image_link(image: Image) -> Link:
    """One image as a link: ``ct`` (when registered), ``sz`` and ``title`` (API.md §9)."""
    attrs: list[tuple[str, str | int]] = []
    ct = content_format(image.content_type)
    if ct is not None:
        attrs.append(("ct", ct))
    attrs += [("sz", image.stored_size), ("title", format_timestamp(image.timestamp))]
    return Link(image.href, tuple(attrs))


def device_images_href(device_id: str) -> str:
    """The listing of a device's images; the id percent-encoded, ``/`` included."""
    return f"/devices/{quote(device_id, safe='')}/images"


def device_export_href(device_id: str) -> str:
    """Where a device's images come as one tar file (API.md §11)."""
    return f"/devices/{quote(device_id, safe='')}/export"


def device_link(device_id: str) -> Link:
    """One device as a link to its listing, titled with its id (API.md §9)."""
    return Link(device_images_href(device_id), (("title", device_id),))
