"""The links this service advertises (RFC 6690), declared once, as data.

HTTP and CoAP render the same list; ``/collections`` shows the part under
``/collections/``. The first link is the original prototype's, unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiocoap.numbers.contentformat import ContentFormat

from formats.linkformat import Filter, Link, apply_filters
from formats.rfc3339 import format_timestamp
from images.models import Image

IMAGES = Link("/collections/images", (("rt", "simple.act"), ("if", "core.b")))

LINKS: tuple[Link, ...] = (IMAGES,)


def links_discover(filters: Sequence[Filter] = ()) -> list[Link]:
    """Links for ``/.well-known/core``, narrowed by every filter."""
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
