"""HTTP front end: thin views that validate, call one service, and respond.

Parsing, rendering and errors are DRF's machinery (see ``formats`` and
``images.http.errors``); views never read ``Content-Type`` or ``Accept``
themselves except to choose between an image and its metadata, and to tell a
raw upload (whose key is in the query) before its body is read. Who may do
what, and how often, is ``images.http.auth``'s; the schema's pieces are
``images.http.openapi``'s.
"""

from __future__ import annotations

import functools
import io
import uuid
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.utils.cache import patch_vary_headers
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.exceptions import NotAcceptable, ParseError
from rest_framework.permissions import AllowAny
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from formats.cbor import CBORParser, CBORRenderer
from formats.json import StrictJSONParser
from formats.linkformat import MEDIA_TYPE, FilterError, LinkFormatRenderer, parse_query_filters
from images import discovery, selectors, services, uploads
from images.http import auth, openapi
from images.http.downloads import image_response, is_conditional, not_modified_response
from images.http.errors import response_for_exception
from images.http.parsers import MultipartFormParser, RawImageParser
from images.models import Image
from images.serializers import (
    ImageKeySerializer,
    ImageMetadataSerializer,
    ImageUploadSerializer,
    image_metadata,
    validated,
)


class LinkFormatResponse(Response):
    """DRF's ``Response``, except that an empty link-format body keeps its Content-Type.

    DRF drops the Content-Type of an empty rendering, but an empty link-format
    document is an answer in that format: no link matched a discovery filter
    (RFC 6690 §4.1), or a listing page has no items.
    """

    @property
    def rendered_content(self) -> bytes:
        content = super().rendered_content
        if not content and self.accepted_renderer.media_type == MEDIA_TYPE:
            self["Content-Type"] = MEDIA_TYPE
        return content


class DiscoveryView(APIView):
    """Discovery is open in every access mode: it names resources, it holds no data."""

    authentication_classes = []
    permission_classes = [AllowAny]
    renderer_classes = [LinkFormatRenderer]


class WellKnownCoreView(DiscoveryView):
    """``GET /.well-known/core``: RFC 6690 discovery with §4.1 filtering (ANDed)."""

    @extend_schema(
        operation_id="discover",
        summary="Discover the resources (RFC 6690)",
        description="Every query parameter is an RFC 6690 §4.1 filter `name=value` on `href` "
        "or a link attribute (a trailing `*` matches a prefix); all must match. "
        "No match: an empty body.",
        parameters=[
            OpenApiParameter(
                "filters",
                {"type": "object", "additionalProperties": {"type": "string"}},
                style="form",
                explode=True,
                description="RFC 6690 §4.1 filters, e.g. `rt=simple.act&if=core.*`.",
            )
        ],
        responses={(200, MEDIA_TYPE): openapi.LINKS, **openapi.errors(400, 406)},
    )
    def get(self, request: Request) -> Response:
        try:
            filters = parse_query_filters(request.META.get("QUERY_STRING", ""))
        except FilterError as exc:
            raise ParseError(str(exc)) from None
        return LinkFormatResponse(discovery.links_discover(filters))


class CollectionsView(DiscoveryView):
    """``GET /collections``: the collections, in link format."""

    @extend_schema(
        operation_id="collections",
        summary="The collections, in link format",
        responses={(200, MEDIA_TYPE): openapi.LINKS, **openapi.errors(406)},
    )
    def get(self, request: Request) -> Response:
        return LinkFormatResponse(discovery.links_collections())


class DownloadFastPath(APIView):
    """Serves ``GET``/``HEAD`` outside DRF's request cycle.

    Downloads and revalidations are the hot path (API.md §0: readers re-fetch
    the same image often). DRF's request wrapping, negotiation and response
    finalising cost about a third of a download's time (measured: 160 of
    500 microseconds), and a download needs none of it: it negotiates between
    the image and its metadata itself. So ``get`` receives Django's
    ``HttpRequest``, after the same read rule DRF's permission class applies
    (:func:`images.http.auth.check_read`: nothing at all in open mode). Other
    methods go through DRF.
    """

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            return super().dispatch(request, *args, **kwargs)
        try:
            auth.check_read(request)
            response = self.get(request, **kwargs)
        except Exception as exc:  # noqa: BLE001 - every error becomes a contract error
            response = response_for_exception(request, exc)
        patch_vary_headers(response, ["Accept", *auth.vary_on()])
        return response

    def get(self, request: HttpRequest, **kwargs: Any) -> HttpResponse:
        raise NotImplementedError


class ImageCollectionView(DownloadFastPath):
    """``POST /collections/images`` (upload) and ``GET`` by device and time."""

    parser_classes = [StrictJSONParser, CBORParser, MultipartFormParser, RawImageParser]
    renderer_classes = [JSONRenderer, CBORRenderer, LinkFormatRenderer]

    @extend_schema(
        operation_id="image_upload",
        summary="Upload an image",
        description="JSON or CBOR (`deviceId`, `timestamp`, `imageData`; CBOR as binary or "
        "as its hex text), a multipart form (RFC 7578: text fields `deviceId` and `timestamp`, "
        "each else in the query, and the image's raw bytes as a file part named `imageData`, "
        "or `image`, or the only file part), or the raw image with `deviceId` and `timestamp` "
        "in the query. "
        "Stored losslessly compressed. The answer is the image's metadata in the format "
        "`Accept` asks for, else in the request's. In token mode: the device token of "
        "`deviceId`.",
        parameters=[
            OpenApiParameter(
                "deviceId", str, description="Raw uploads (and forms without it): the device."
            ),
            OpenApiParameter(
                "timestamp",
                OpenApiTypes.DATETIME,
                description="Raw uploads (and forms without it): when taken.",
            ),
            openapi.header("Location", [201], "The new image: `/collections/images/{id}`."),
            openapi.header("Retry-After", [429], "Seconds to wait before the next upload."),
            openapi.header("WWW-Authenticate", [401], "`Bearer` (RFC 6750 §3)."),
        ],
        request={
            openapi.JSON: ImageUploadSerializer,
            openapi.CBOR_MEDIA_TYPE: ImageUploadSerializer,
            uploads.FORM_MEDIA_TYPE: openapi.UPLOAD_FORM,
            **{media_type: openapi.BINARY for media_type in openapi.UPLOAD_RAW_TYPES},
        },
        responses={
            **openapi.with_status(201, openapi.in_formats(ImageMetadataSerializer, "Stored.")),
            **openapi.with_status(
                200,
                openapi.in_formats(
                    ImageMetadataSerializer, "The same image was stored before (a retry)."
                ),
            ),
            **openapi.errors(400, 401, 403, 404, 406, 409, 413, 415, 429),
        },
        auth=[{openapi.BearerTokenScheme.name: []}],
        examples=[openapi.UPLOAD_EXAMPLE],
    )
    def post(self, request: Request) -> Response:
        """Upload: :class:`images.uploads.Upload` judges and stores; this only translates.

        DRF has already checked that the client holds a device token (before
        the body is read). ``admit`` judges the rest that needs no body, from
        the headers and the query; ``request.data`` reads the body only after.
        """
        upload = uploads.Upload(
            media_type=request.content_type,
            principal=auth.drf_principal(request),
            query=request.query_params,
            client=self._client(request),
        )
        upload.admit(size=_content_length(request))
        body = request.data
        if upload.raw:
            # DRF hands an empty body over as {} without asking the parser;
            # otherwise it is the spooled file, deleted when closed.
            with io.BytesIO() if isinstance(body, dict) else body as image:
                result = upload.store(image)
        elif upload.form:
            result = upload.store(_form(request))
        else:
            result = upload.store(body)
        return _metadata_response(
            request, result.image, status=201 if result.created else 200, location=True
        )

    def _client(self, request: Request) -> str:
        return auth.client_address(request)

    @extend_schema(
        operation_id="image_find",
        summary="Download an image by device and time",
        parameters=[
            ImageKeySerializer,
            *openapi.CONDITIONAL_HEADERS,
            *openapi.DOWNLOAD_HEADERS,
            openapi.NO_FORMAT_OVERRIDE,
        ],
        responses=openapi.download_responses("The stored image."),
    )
    def get(self, request: HttpRequest) -> HttpResponse:
        key = _image_key(request)
        return _download(request, functools.partial(selectors.image_find, **key), immutable=False)


class ImageItemView(DownloadFastPath):
    """``/collections/images/{id}``: the image (or its metadata), and DELETE."""

    @extend_schema(
        operation_id="image_get",
        summary="Download an image by id (or its metadata)",
        parameters=[
            *openapi.CONDITIONAL_HEADERS,
            *openapi.DOWNLOAD_HEADERS,
            openapi.NO_FORMAT_OVERRIDE,
        ],
        responses=openapi.download_responses(
            "The stored image. Its pixels never change; its bytes change once, when deferred"
            " optimization finishes (Cache-Control says immutable only after that)."
        ),
    )
    def get(self, request: HttpRequest, image_id: uuid.UUID) -> HttpResponse:
        fetch = functools.partial(selectors.image_get, image_id=image_id)
        return _download(request, fetch, immutable=True)

    @extend_schema(
        operation_id="image_delete",
        summary="Delete an image",
        description="In token mode: a staff user or the device token of the image's device.",
        responses={204: OpenApiResponse(description="Deleted."), **openapi.errors(401, 403, 404)},
    )
    def delete(self, request: Request, image_id: uuid.UUID) -> Response:
        image = selectors.image_get(image_id=image_id, with_data=False)
        self.check_object_permissions(request, image)
        services.image_delete(image_id=image.id)
        return Response(status=204)


METADATA_RENDERERS: dict[str, type[BaseRenderer]] = {
    renderer.media_type: renderer for renderer in (JSONRenderer, CBORRenderer, LinkFormatRenderer)
}


def _download(
    request: HttpRequest, fetch: Callable[..., Image], *, immutable: bool
) -> HttpResponse:
    """A revalidation answered from the row alone (what caches do most), else the download.

    ``fetch(with_data=...)`` reads the row; a download reads a small image's
    bytes with it, in the same query, so that an optimizer replacing them
    meanwhile cannot make the read fail (a second query would).
    """
    if is_conditional(request):
        head = fetch(with_data=False)
        auth.check_read(request, head.device_id)
        answer = not_modified_response(request, head, immutable=immutable)
        if answer is not None:
            return answer
    image = fetch()
    auth.check_read(request, image.device_id)
    return image_or_metadata(request, image, immutable=immutable)


def image_or_metadata(request: HttpRequest, image: Image, *, immutable: bool) -> HttpResponse:
    """The image, unless ``Accept`` names a metadata format and prefers it (API.md §3)."""
    if request.META.get("HTTP_ACCEPT", "*/*").strip() in ("*/*", ""):
        # What most downloads send (curl, wrk, browsers' <img> send image/*
        # and more): nothing to negotiate, which cost 12 % of a download.
        return image_response(request, image, immutable=immutable)
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


# Query strings already validated (readers re-fetch the same images): the
# serializer's run cost a third of a download by key. Bounded; a hostile
# client churning it only costs the validation it would have cost anyway.
_KEYS: dict[tuple[str, str | None], dict[str, Any]] = {}
_KEYS_MAX = 512


def _image_key(request: HttpRequest) -> dict[str, Any]:
    """``deviceId`` and ``timestamp`` validated by ``ImageKeySerializer``; raises its 400.

    ``request.GET`` is a function of the raw query string and the request's
    encoding alone, and the validated values (a string, an aware datetime)
    are immutable, so a validation is reused for the same two.
    """
    cache_key = (request.META.get("QUERY_STRING", ""), request.encoding)
    key = _KEYS.get(cache_key)
    if key is None:
        key = validated(ImageKeySerializer, request.GET)
        if len(_KEYS) >= _KEYS_MAX:
            _KEYS.clear()
        _KEYS[cache_key] = key
    return key


def _form(request: Request) -> uploads.Form:
    """The parsed form; its file parts are the very files the upload handlers wrote."""
    files = {name: [part.file for part in parts] for name, parts in request.FILES.lists()}
    return uploads.Form(text=request.POST, files=files)


def _content_length(request: Request) -> int | None:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None


def _metadata_response(request: Request, image: Image, *, status: int, location: bool) -> Response:
    if request.accepted_renderer.media_type == MEDIA_TYPE:
        data: Any = discovery.image_link(image)
    else:
        data = image_metadata(image)
    headers = {"Location": image.href} if location else None
    return Response(data, status=status, headers=headers)
