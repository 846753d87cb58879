"""``GET /collections/images/{id}/thumbnail?size=N`` (API.md §8).

WebP unless ``Accept`` prefers JPEG (``image/jpeg`` without ``image/webp``);
``size`` from 16 to 1024 (default 256) bounds both sides. Made on demand from
the stored image and kept in Django's cache framework (in-process memory, or
Redis when ``REDIS_URL`` is set), keyed by the stored bytes' sha256, so a
cache hit never reads the image's blob. Revalidation (``If-None-Match``)
needs only the metadata row.
"""

from __future__ import annotations

import uuid

from django.http import HttpResponse
from django.utils.cache import get_conditional_response, patch_vary_headers
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotAcceptable
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from images import access, selectors, thumbnails
from images.http import auth, openapi
from images.http.auth import vary_on
from images.http.errors import error_response
from images.models import Image
from images.serializers import validated
from images.services import limits_current


class ThumbnailQuerySerializer(serializers.Serializer):
    size = serializers.IntegerField(
        min_value=thumbnails.SIZE_MIN,
        max_value=thumbnails.SIZE_MAX,
        required=False,
        default=thumbnails.SIZE_DEFAULT,
    )


def thumbnail_etag(image: Image, size: int, content_type: str) -> str:
    # Weak (RFC 9110 §8.8.1): the same picture, though a newer Pillow may
    # encode it to other bytes.
    return f'W/"{image.sha256}-{size}-{thumbnails.EXTENSIONS[content_type]}"'


class ImageThumbnailView(APIView):
    """A thumbnail of one stored image, with ETag and Cache-Control."""

    @extend_schema(
        operation_id="image_thumbnail",
        summary="A thumbnail of an image",
        parameters=[
            ThumbnailQuerySerializer,
            openapi.request_header("If-None-Match", "An ETag from an earlier answer: 304."),
            openapi.header("ETag", [200, 304], "Weak: the image's SHA-256, size and format."),
            openapi.header("Cache-Control", [200, 304], "`public` (open) or `private` (token)."),
        ],
        responses={
            **{
                (200, media_type): OpenApiResponse(openapi.BINARY, "The thumbnail.")
                for media_type in thumbnails.CONTENT_TYPES
            },
            304: OpenApiResponse(description="Not modified."),
            **openapi.errors(400, 401, 403, 404, 406, 412, 422),
        },
    )
    def get(self, request: Request, image_id: uuid.UUID) -> HttpResponse:
        size = validated(ThumbnailQuerySerializer, request.query_params)["size"]
        django_request = request._request
        content_type = django_request.get_preferred_type(list(thumbnails.CONTENT_TYPES))
        if content_type is None:
            raise NotAcceptable(f"thumbnails are {' or '.join(thumbnails.CONTENT_TYPES)}")
        image = selectors.image_get(image_id=image_id, with_data=False)
        access.read_check(auth.drf_principal(request), image.device_id)
        etag = thumbnail_etag(image, size, content_type)
        headers = {
            "ETag": etag,
            "Cache-Control": access.cache_control(access.THUMBNAIL_SECONDS),
            "X-Content-Type-Options": "nosniff",
        }
        probe = HttpResponse(headers=headers)
        response = get_conditional_response(django_request, etag=etag, response=probe)
        if response.status_code == 412:
            response = error_response(django_request, 412, {"detail": ["precondition failed"]})
        elif response is probe:
            data = thumbnails.thumbnail_for(image, size, content_type, limits_current())
            response = HttpResponse(data, content_type=content_type, headers=headers)
            if request.method == "HEAD":
                response.content = b""
                response["Content-Length"] = str(len(data))
        patch_vary_headers(response, ["Accept", *vary_on()])
        return response

    def perform_content_negotiation(
        self, request: Request, force: bool = False
    ) -> tuple[BaseRenderer, str]:
        # The view chooses between WebP and JPEG itself.
        return super().perform_content_negotiation(request, force=True)
