"""Listings, front-end neutral: query parameters in, a page and its next link out.

HTTP (``images.http.listings``) and CoAP (``images.coap.resources``) both call
these, so paging, cursors and validation have one implementation. Pages are
keyset pages: the ``next`` URL resumes right after the last item shown, so
pages stay stable while devices keep sending images.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from rest_framework import serializers

from formats.linkformat import Link
from formats.rfc3339 import format_timestamp
from images import discovery, selectors
from images.serializers import (
    DEVICE_CURSOR,
    IMAGE_CURSOR,
    DeviceListQuerySerializer,
    DevicePageSerializer,
    ImageListQuerySerializer,
    ImagePageSerializer,
    cursor_encode,
    validated,
)


@dataclass(frozen=True)
class Listing:
    """One page of a listing, ready for any front end to render."""

    page: selectors.Page[Any]
    next_url: str | None
    serializer_class: type[serializers.Serializer]
    link: Callable[[Any], Link]

    def data(self) -> dict[str, Any]:
        """``{"items": [...], "next": url | None}`` with the contract's wire names."""
        return dict(self.serializer_class({"items": self.page.items, "next": self.next_url}).data)

    def links(self) -> list[Link]:
        """One link per item, for link format."""
        return [self.link(item) for item in self.page.items]


def devices_page(params: Mapping[str, Any], *, only: str | None = None) -> Listing:
    """A page of ``/devices`` for query ``params`` (``limit``, ``cursor``); ``only`` that device."""
    query = validated(DeviceListQuerySerializer, params)
    page = selectors.device_list(after=query.get("after"), limit=query["limit"], only=only)
    next_url = None
    if page.has_more:
        cursor = cursor_encode(DEVICE_CURSOR, page.items[-1].device_id)
        next_url = _url("/devices", {"limit": query["limit"], "cursor": cursor})
    return Listing(
        page,
        next_url,
        DevicePageSerializer,
        lambda device: discovery.device_link(device.device_id),
    )


def device_images_page(device_id: str, params: Mapping[str, Any]) -> Listing:
    """A page of ``/devices/{device_id}/images`` (``from``, ``to``, ``limit``, ``cursor``)."""
    query = validated(ImageListQuerySerializer, params)
    page = selectors.device_images(
        device_id=device_id,
        start=query.get("start"),
        end=query.get("end"),
        after=query.get("after"),
        limit=query["limit"],
    )
    next_url = None
    if page.has_more:
        cursor = cursor_encode(IMAGE_CURSOR, format_timestamp(page.items[-1].timestamp))
        params = {
            "from": query.get("start"),
            "to": query.get("end"),
            "limit": query["limit"],
            "cursor": cursor,
        }
        next_url = _url(discovery.device_images_href(device_id), params)
    return Listing(page, next_url, ImagePageSerializer, discovery.image_link)


def _url(path: str, params: Mapping[str, Any]) -> str:
    """``path`` with the parameters that are set; timestamps in their normal form."""
    query = {
        name: format_timestamp(value) if isinstance(value, datetime) else value
        for name, value in params.items()
        if value is not None
    }
    return f"{path}?{urlencode(query)}"
