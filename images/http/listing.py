"""HTTP listings (API.md §4, §9): ``GET /devices`` and ``GET /devices/{deviceId}/images``.

Both are paged by an opaque keyset cursor: the ``next`` URL (in the body and
in a ``Link: <...>; rel="next"`` header, RFC 8288) resumes right after the
last item shown, so pages stay stable while devices keep sending images.
The URL is a relative reference, like every ``href`` we send.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from formats.cbor import CBORRenderer
from formats.linkformat import Link, LinkFormatRenderer
from formats.rfc3339 import format_timestamp, parse_timestamp
from images import discovery, selectors
from images.http import openapi
from images.http.views import LinkFormatResponse
from images.serializers import DeviceIdField, ImageMetadataSerializer, TimestampField

LIMIT_DEFAULT = 100
LIMIT_MAX = 1000

# The kind prefix inside a cursor: a device list's cursor is refused by an
# image listing and the other way round.
_DEVICE_CURSOR = "d"
_IMAGE_CURSOR = "t"


def cursor_encode(kind: str, position: str) -> str:
    """An opaque, URL-safe token for a listing position."""
    token = base64.urlsafe_b64encode(f"{kind}:{position}".encode())
    return token.rstrip(b"=").decode("ascii")


def cursor_decode(kind: str, token: str) -> str:
    """The position in a token from :func:`cursor_encode`; ``ValueError`` if it is not one."""
    try:
        text = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
        found, sep, position = text.decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("not a cursor from a next link") from None
    if not sep or found != kind:
        raise ValueError("not a cursor from a next link of this listing")
    return position


class DeviceCursorField(serializers.Field):
    """A device listing's cursor: the id of the last device on the previous page."""

    def to_internal_value(self, data: Any) -> str:
        try:
            return DeviceIdField().to_internal_value(cursor_decode(_DEVICE_CURSOR, str(data)))
        except (ValueError, serializers.ValidationError):
            raise serializers.ValidationError("not a cursor from a next link of /devices") from None


class ImageCursorField(serializers.Field):
    """An image listing's cursor: the timestamp of the last image on the previous page."""

    def to_internal_value(self, data: Any) -> datetime:
        try:
            return parse_timestamp(cursor_decode(_IMAGE_CURSOR, str(data)))
        except ValueError:
            raise serializers.ValidationError(
                "not a cursor from a next link of this device's images"
            ) from None


def _limit_field() -> serializers.IntegerField:
    return serializers.IntegerField(
        min_value=1, max_value=LIMIT_MAX, required=False, default=LIMIT_DEFAULT
    )


class DeviceListQuerySerializer(serializers.Serializer):
    """``limit`` and ``cursor`` of ``GET /devices``; other parameters are ignored."""

    limit = _limit_field()
    cursor = DeviceCursorField(required=False, source="after")


class ImageListQuerySerializer(serializers.Serializer):
    """``from`` (inclusive), ``to`` (exclusive), ``limit`` and ``cursor`` of a device's images."""

    def get_fields(self) -> dict[str, serializers.Field]:
        # Declared here because ``from`` is a Python keyword.
        return {
            "from": TimestampField(space_means_plus=True, required=False, source="start"),
            "to": TimestampField(space_means_plus=True, required=False, source="end"),
            "limit": _limit_field(),
            "cursor": ImageCursorField(required=False, source="after"),
        }

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        start, end = attrs.get("start"), attrs.get("end")
        if start is not None and end is not None and end < start:
            raise serializers.ValidationError({"to": ["must not be before from"]})
        return attrs


class DeviceSummarySerializer(serializers.Serializer):
    """One device in ``GET /devices`` (API.md §4)."""

    deviceId = serializers.CharField(source="device_id")
    imageCount = serializers.IntegerField(source="image_count")
    firstTimestamp = TimestampField(source="first_timestamp")
    lastTimestamp = TimestampField(source="last_timestamp")
    href = serializers.SerializerMethodField()

    def get_href(self, device: selectors.DeviceSummary) -> str:
        return discovery.device_images_href(device.device_id)


class DevicePageSerializer(serializers.Serializer):
    """A page of ``GET /devices`` (API.md §9)."""

    items = DeviceSummarySerializer(many=True)
    next = serializers.CharField(allow_null=True, help_text="The next page's URL, or null.")


class ImagePageSerializer(serializers.Serializer):
    """A page of ``GET /devices/{deviceId}/images`` (API.md §9)."""

    items = ImageMetadataSerializer(many=True)
    next = serializers.CharField(allow_null=True, help_text="The next page's URL, or null.")


def listing_schema(
    operation_id: str,
    summary: str,
    page: type[serializers.Serializer],
    query: type[serializers.Serializer],
) -> Callable[[Any], Any]:
    """The OpenAPI operation of a listing: JSON, CBOR or link format, and a Link header."""
    return extend_schema(
        operation_id=operation_id,
        summary=summary,
        parameters=[query, openapi.header("Link", [200], 'The next page: `<url>; rel="next"`.')],
        responses={
            **openapi.with_status(200, openapi.in_formats(page, "A page, oldest first.")),
            **openapi.errors(400, 401, 403, 404, 406),
        },
    )


class ListingView(APIView):
    """Shared rendering: ``{"items", "next"}`` in JSON or CBOR, bare links in link format."""

    renderer_classes = [JSONRenderer, CBORRenderer, LinkFormatRenderer]

    def page_response(
        self,
        request: Request,
        page: selectors.Page[Any],
        next_url: str | None,
        *,
        serializer_class: type[serializers.Serializer],
        link: Callable[[Any], Link],
    ) -> Response:
        if request.accepted_renderer.media_type == LinkFormatRenderer.media_type:
            data: Any = [link(item) for item in page.items]
        else:
            data = serializer_class({"items": page.items, "next": next_url}).data
        headers = {"Link": f'<{next_url}>; rel="next"'} if next_url else None
        return LinkFormatResponse(data, headers=headers)


class DeviceListView(ListingView):
    """``GET /devices``: every device that has images, ordered by id."""

    @listing_schema(
        "device_list",
        "The devices that have images",
        DevicePageSerializer,
        DeviceListQuerySerializer,
    )
    def get(self, request: Request) -> Response:
        query = _valid(DeviceListQuerySerializer, request.query_params)
        page = selectors.device_list(after=query.get("after"), limit=query["limit"])
        next_url = None
        if page.has_more:
            cursor = cursor_encode(_DEVICE_CURSOR, page.items[-1].device_id)
            next_url = _url("/devices", {"limit": query["limit"], "cursor": cursor})
        return self.page_response(
            request,
            page,
            next_url,
            serializer_class=DevicePageSerializer,
            link=lambda device: discovery.device_link(device.device_id),
        )


class DeviceImagesView(ListingView):
    """``GET /devices/{deviceId}/images``: a device's image metadata, oldest first."""

    @listing_schema(
        "device_images", "A device's images", ImagePageSerializer, ImageListQuerySerializer
    )
    def get(self, request: Request, device_id: str) -> Response:
        query = _valid(ImageListQuerySerializer, request.query_params)
        page = selectors.device_images(
            device_id=device_id,
            start=query.get("start"),
            end=query.get("end"),
            after=query.get("after"),
            limit=query["limit"],
        )
        next_url = None
        if page.has_more:
            cursor = cursor_encode(_IMAGE_CURSOR, format_timestamp(page.items[-1].timestamp))
            params = {
                "from": query.get("start"),
                "to": query.get("end"),
                "limit": query["limit"],
                "cursor": cursor,
            }
            next_url = _url(discovery.device_images_href(device_id), params)
        return self.page_response(
            request,
            page,
            next_url,
            serializer_class=ImagePageSerializer,
            link=discovery.image_link,
        )


def _valid(serializer_class: type[serializers.Serializer], data: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _url(path: str, params: Mapping[str, Any]) -> str:
    """``path`` with the parameters that are set; timestamps in their normal form."""
    query = {
        name: format_timestamp(value) if isinstance(value, datetime) else value
        for name, value in params.items()
        if value is not None
    }
    return f"{path}?{urlencode(query)}"
