"""HTTP listings (API.md §4, §9): ``GET /devices`` and ``GET /devices/{deviceId}/images``.

Both are paged by an opaque keyset cursor: the ``next`` URL (in the body and
in a ``Link: <...>; rel="next"`` header, RFC 8288) resumes right after the
last item shown, so pages stay stable while devices keep sending images.
The URL is a relative reference, like every ``href`` we send.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from formats.cbor import CBORRenderer
from formats.linkformat import LinkFormatRenderer
from images import access, listings
from images.http import auth, openapi
from images.http.views import LinkFormatResponse
from images.serializers import (
    DeviceListQuerySerializer,
    DevicePageSerializer,
    ImageListQuerySerializer,
    ImagePageSerializer,
)


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

    def page_response(self, request: Request, listing: listings.Listing) -> Response:
        if request.accepted_renderer.media_type == LinkFormatRenderer.media_type:
            data: Any = listing.links()
        else:
            data = listing.data()
        headers = {"Link": f'<{listing.next_url}>; rel="next"'} if listing.next_url else None
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
        only = access.visible_device(auth.drf_principal(request))
        return self.page_response(request, listings.devices_page(request.query_params, only=only))


class DeviceImagesView(ListingView):
    """``GET /devices/{deviceId}/images``: a device's image metadata, oldest first."""

    @listing_schema(
        "device_images", "A device's images", ImagePageSerializer, ImageListQuerySerializer
    )
    def get(self, request: Request, device_id: str) -> Response:
        access.read_check(auth.drf_principal(request), device_id)
        return self.page_response(
            request, listings.device_images_page(device_id, request.query_params)
        )
