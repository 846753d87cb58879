"""HTTP front end: thin views that validate, call one service, and respond.

Parsing, rendering and errors are DRF's machinery (see ``formats`` and
``images.http.errors``); views never read ``Content-Type`` or ``Accept``
themselves except to choose between an image and its metadata.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.http import HttpResponse
from django.utils.cache import patch_vary_headers
from rest_framework.exceptions import NotAcceptable, ParseError
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from formats.cbor import CBORParser, CBORRenderer
from formats.json import StrictJSONParser
from formats.linkformat import FilterError, LinkFormatRenderer, parse_query_filters
from images import discovery, selectors, services
from images.http.downloads import image_response, is_conditional, not_modified_response
from images.http.negotiation import request_media_type
from images.http.parsers import RawImageParser, check_content_length
from images.models import Image
from images.serializers import ImageKeySerializer, ImageUploadSerializer, image_metadata

METADATA_TYPES = ("application/json", "application/cbor", "application/link-format")


class WellKnownCoreView(APIView):
    """``GET /.well-known/core``: RFC 6690 discovery with §4.1 filtering (ANDed)."""

    renderer_classes = [LinkFormatRenderer]

    def get(self, request: Request) -> Response:
        try:
            filters = parse_query_filters(request.META.get("QUERY_STRING", ""))
        except FilterError as exc:
            raise ParseError(str(exc)) from None
        return Response(discovery.links_discover(filters))


class CollectionsView(APIView):
    """``GET /collections``: the collections, in link format."""

    renderer_classes = [LinkFormatRenderer]

    def get(self, request: Request) -> Response:
        return Response(discovery.links_collections())


class ImageCollectionView(APIView):
    """``POST /collections/images`` (upload) and ``GET`` by device and time."""

    parser_classes = [StrictJSONParser, CBORParser, RawImageParser]
    renderer_classes = [JSONRenderer, CBORRenderer, LinkFormatRenderer]

    def post(self, request: Request) -> Response:
        check_content_length(
            request.META, request_media_type(request), services.limits_current().max_bytes
        )
        body = request.data
        if isinstance(body, bytes):
            key = _valid(ImageKeySerializer, request.query_params)
            fields = {**key, "data": body}
        else:
            fields = _valid(ImageUploadSerializer, body)
        result = services.image_ingest(**fields)
        return _metadata_response(
            request, result.image, status=201 if result.created else 200, location=True
        )

    def get(self, request: Request) -> HttpResponse:
        key = _valid(ImageKeySerializer, request.query_params)
        if is_conditional(request):
            # Revalidation is the hot path for caches: answer it from metadata.
            head = selectors.image_find(with_data=False, **key)
            answer = not_modified_response(request, head, immutable=False)
            if answer is not None:
                return answer
        return _image_or_metadata(request, selectors.image_find(**key), immutable=False)

    def perform_content_negotiation(
        self, request: Request, force: bool = False
    ) -> tuple[BaseRenderer, str]:
        # Downloads negotiate between the image and its metadata themselves.
        return super().perform_content_negotiation(request, force=True)


class ImageItemView(APIView):
    """``/collections/images/{id}``: the image (or its metadata), and DELETE."""

    renderer_classes = [JSONRenderer, CBORRenderer, LinkFormatRenderer]

    def get(self, request: Request, image_id: uuid.UUID) -> HttpResponse:
        if is_conditional(request):
            head = selectors.image_get(image_id=image_id, with_data=False)
            answer = not_modified_response(request, head, immutable=True)
            if answer is not None:
                patch_vary_headers(answer, ["Accept"])
                return answer
        return _image_or_metadata(request, selectors.image_get(image_id=image_id), immutable=True)

    def delete(self, request: Request, image_id: uuid.UUID) -> Response:
        services.image_delete(image_id=image_id)
        return Response(status=204)

    def perform_content_negotiation(
        self, request: Request, force: bool = False
    ) -> tuple[BaseRenderer, str]:
        return super().perform_content_negotiation(request, force=True)


def _valid(serializer_class: type, data: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _image_or_metadata(request: Request, image: Image, *, immutable: bool) -> HttpResponse:
    """The image, unless ``Accept`` names a metadata format and prefers it (API.md §3)."""
    django_request = request._request
    choice = django_request.get_preferred_type([image.content_type, *METADATA_TYPES])
    if choice is None:
        raise NotAcceptable(
            f"this image is {image.content_type}; metadata is {', '.join(METADATA_TYPES)}"
        )
    named = {str(media_type).split(";")[0].strip() for media_type in django_request.accepted_types}
    if choice in METADATA_TYPES and choice in named:
        response = _metadata_response(request, image, status=200, media_type=choice)
    else:
        response = image_response(django_request, image, immutable=immutable)
    patch_vary_headers(response, ["Accept"])
    return response


def _metadata_response(
    request: Request,
    image: Image,
    *,
    status: int,
    location: bool = False,
    media_type: str | None = None,
) -> Response:
    if media_type is not None:
        # The caller has negotiated; point DRF at the matching renderer.
        renderer = next(
            r()
            for r in (JSONRenderer, CBORRenderer, LinkFormatRenderer)
            if r.media_type == media_type
        )
        request.accepted_renderer, request.accepted_media_type = renderer, media_type
    if request.accepted_renderer.media_type == LinkFormatRenderer.media_type:
        data: Any = discovery.image_link(image)
    else:
        data = image_metadata(image)
    headers = {"Location": image.href} if location else None
    return Response(data, status=status, headers=headers)
