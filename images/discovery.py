"""The links this service advertises (RFC 6690), declared once, as data.

HTTP and CoAP render the same list (CoAP without the HTTP-only listings);
``/collections`` shows the part under ``/collections/``. The first link is
the original prototype's, unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote

from aiocoap.numbers.contentformat import ContentFormat

from formats.linkformat import Filter, Link, apply_filters
from formats.rfc3339 import format_timestamp
from images.models import Image

IMAGES = Link("/collections/images", (("rt", "simple.act"), ("if", "core.b")))
# A link list (``if=core.ll``, the CoRE interfaces' name for it): one link per
# device, each to that device's own listing, a link list of its images in turn.
DEVICES = Link("/devices", (("if", "core.ll"),))

LINKS: tuple[Link, ...] = (IMAGES, DEVICES)


def links_discover(filters: Sequence[Filter] = ()) -> list[Link]:
    """Links for ``/.well-known/core``, narrowed by every filter.

    HTTP and CoAP serve the same resources, so both advertise these links.
    """
    return apply_filters(LINKS, filters)


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
