"""CoRE Link Format (RFC 6690): links as data, a serializer, filtering, a parser.

Parsing is aiocoap's (``aiocoap.util.linkformat``). Serialising is written here
because aiocoap quotes every value, numbers included; the contract (and
libcoap) write ``ct=40`` and ``sz=731`` bare, which RFC 6690 §2 allows for
cardinals, and quote the rest.

Filtering is written here because aiocoap's well-known/core resource applies
only the last query parameter, while we AND all of them (as RFC 9176 lookups
do).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from aiocoap.util import linkformat as _aiocoap_linkformat
from rest_framework.renderers import BaseRenderer

MEDIA_TYPE = "application/link-format"
CONTENT_FORMAT = 40

# None: an attribute without a value (``obs``, RFC 7641 §6).
AttrValue = str | int | None


@dataclass(frozen=True)
class Link:
    """One link: a target and its attributes, in the order they are written."""

    href: str
    attrs: tuple[tuple[str, AttrValue], ...] = ()

    def values(self, name: str) -> list[str]:
        """Every value of attribute ``name``, split at spaces (RFC 6690 §4.1)."""
        found: list[str] = []
        for key, value in self.attrs:
            if key == name and value is None:
                found.append("")
            elif key == name:
                found.extend(str(value).split(" ") if isinstance(value, str) else [str(value)])
        return found


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def serialize_link(link: Link) -> str:
    parts = [f"<{link.href}>"]
    for name, value in link.attrs:
        if value is None:
            parts.append(name)
        else:
            parts.append(f"{name}={value}" if isinstance(value, int) else f"{name}={_quote(value)}")
    return ";".join(parts)


def serialize(links: Iterable[Link]) -> str:
    """The link-format document: links separated by commas (RFC 6690 §2)."""
    return ",".join(serialize_link(link) for link in links)


def parse(text: str) -> list[Link]:
    """Parse a link-format document (via aiocoap) into :class:`Link` values."""
    parsed = _aiocoap_linkformat.parse(text)
    return [Link(link.href, tuple((k, v) for k, v in link.attr_pairs)) for link in parsed.links]


@dataclass(frozen=True)
class Filter:
    """One ``name=value`` query filter; a trailing ``*`` makes it a prefix match."""

    name: str
    value: str

    def matches(self, link: Link) -> bool:
        candidates = [link.href] if self.name == "href" else link.values(self.name)
        if self.value.endswith("*"):
            prefix = self.value[:-1]
            return any(candidate.startswith(prefix) for candidate in candidates)
        return self.value in candidates


class FilterError(ValueError):
    """A malformed discovery query (HTTP 400, CoAP 4.00)."""


def parse_filters(pairs: Iterable[str]) -> list[Filter]:
    """Build filters from ``name=value`` strings (CoAP Uri-Query options).

    A parameter without ``=``, with an empty name, or with a ``*`` anywhere
    but at the end is malformed.
    """
    filters = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise FilterError(f"filter {pair!r} has no '='")
        if not name:
            raise FilterError(f"filter {pair!r} has an empty name")
        if "*" in value[:-1]:
            raise FilterError(f"filter {pair!r}: '*' is only allowed at the end")
        filters.append(Filter(name, value))
    return filters


def parse_query_filters(query_string: str) -> list[Filter]:
    """Build filters from a URL query string (percent-decoded per field)."""
    try:
        pairs = parse_qsl(query_string, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        # parse_qsl names the field; recheck each raw field for a precise message.
        parse_filters(field for field in query_string.split("&"))
        raise FilterError("malformed query string") from None
    return parse_filters(f"{name}={value}" for name, value in pairs)


def apply_filters(links: Sequence[Link], filters: Sequence[Filter]) -> list[Link]:
    """The links matching every filter."""
    return [link for link in links if all(f.matches(link) for f in filters)]


class LinkFormatRenderer(BaseRenderer):
    """Renders a :class:`Link` or a sequence of them for DRF.

    No charset parameter: RFC 6690 §7.1 registers the media type without one
    (it is always UTF-8).
    """

    media_type = MEDIA_TYPE
    format = "link"
    charset = None

    def render(
        self,
        data: Link | Sequence[Link] | None,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        if data is None:
            return b""
        links = [data] if isinstance(data, Link) else data
        return serialize(links).encode("utf-8")
