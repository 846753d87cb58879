"""HTTP front end: thin views that validate, call one service, and respond.

Parsing, rendering and errors are DRF's machinery (see ``formats`` and
``images.http.errors``); views never read ``Content-Type`` or ``Accept``
themselves except to choose between an image and its metadata.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.utils.cache import patch_vary_headers
from rest_framework.exceptions import NotAcceptable, ParseError
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from formats.cbor import CBORParser, CBORRenderer
from formats.json import StrictJSONParser
from formats.linkformat import MEDIA_TYPE, FilterError, LinkFormatRenderer, parse_query_filters
from images import discovery, selectors, services
from images.http.downloads import image_response, is_conditional, not_modified_response
from images.http.errors import response_for_exception
from images.http.negotiation import request_media_type
from images.http.parsers import RawImageParser, check_content_length
from images.models import Image
from images.serializers import ImageKeySerializer, ImageUploadSerializer, image_metadata


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


class DownloadFastPath(APIView):
    """Serves ``GET``/``HEAD`` outside DRF's request cycle.

    Downloads and revalidations are the hot path (API.md §0: readers re-fetch
    the same image often). DRF's request wrapping, negotiation and response
    finalising cost about a third of a download's time (measured: 160 of
    500 microseconds), and a download needs none of it: it negotiates between
    the image and its metadata itself. Other methods go through DRF.
    """

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            return super().dispatch(request, *args, **kwargs)
        try:
            response = self.download(request, **kwargs)
        except Exception as exc:  # noqa: BLE001 - every error becomes a contract error
            response = response_for_exception(request, exc)
        patch_vary_headers(response, ["Accept"])
        return response

    def download(self, request: HttpRequest, **kwargs: Any) -> HttpResponse:
        raise NotImplementedError


class ImageCollectionView(DownloadFastPath):
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

    def download(self, request: HttpRequest, **kwargs: Any) -> HttpResponse:
        key = _valid(ImageKeySerializer, request.GET)
        if is_conditional(request):
            # Revalidation is what caches do most: answer it from metadata.
            head = selectors.image_find(with_data=False, **key)
            answer = not_modified_response(request, head, immutable=False)
            if answer is not None:
                return answer
        return _image_or_metadata(request, selectors.image_find(**key), immutable=False)


class ImageItemView(DownloadFastPath):
    """``/collections/images/{id}``: the image (or its metadata), and DELETE."""

    def download(self, request: HttpRequest, image_id: uuid.UUID) -> HttpResponse:
        if is_conditional(request):
            head = selectors.image_get(image_id=image_id, with_data=False)
            answer = not_modified_response(request, head, immutable=True)
            if answer is not None:
                return answer
        return _image_or_metadata(request, selectors.image_get(image_id=image_id), immutable=True)

    def delete(self, request: Request, image_id: uuid.UUID) -> Response:
        services.image_delete(image_id=image_id)
        return Response(status=204)


def _valid(serializer_class: type, data: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


METADATA_RENDERERS: dict[str, type[BaseRenderer]] = {
    renderer.media_type: renderer for renderer in (JSONRenderer, CBORRenderer, LinkFormatRenderer)
}


def _image_or_metadata(request: HttpRequest, image: Image, *, immutable: bool) -> HttpResponse:
    """The image, unless ``Accept`` names a metadata format and prefers it (API.md §3)."""
    choice = request.get_preferred_type([image.content_type, *METADATA_RENDERERS])
    if choice is None:
        raise NotAcceptable(
            f"this image is {image.content_type}; its metadata is " + ", ".join(METADATA_RENDERERS)
        )
    named = {str(media_type).split(";")[0].strip() for media_type in request.accepted_types}
    if choice not in METADATA_RENDERERS or choice not in named:
        return image_response(request, image, immutable=immutable)
    data = discovery.image_link(image) if choice == MEDIA_TYPE else image_metadata(image)
    body = METADATA_RENDERERS[choice]().render(data)
    response = HttpResponse(b"" if request.method == "HEAD" else body, content_type=choice)
    response["Content-Length"] = str(len(body))
    return response


def _metadata_response(request: Request, image: Image, *, status: int, location: bool) -> Response:
    if request.accepted_renderer.media_type == MEDIA_TYPE:
        data: Any = discovery.image_link(image)
    else:
        data = image_metadata(image)
    headers = {"Location": image.href} if location else None
    return Response(data, status=status, headers=headers)
