"""``GET /devices/{deviceId}/export?from=&to=``: a device's images as one tar stream (API.md §11).

Served outside DRF's request cycle, like downloads: the answer is a stream
of bytes in constant memory (:func:`images.lifecycle.tarball.tarball_stream`), not a
negotiated representation. Errors are the contract's, from
:func:`images.http.errors.response_for_exception`.
"""

from __future__ import annotations

import itertools
from typing import Any
from urllib.parse import quote

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.views import APIView

from formats.errors import unless_safe
from images import access
from images.filenames import safe_name
from images.http import auth, openapi
from images.http.errors import response_for_exception
from images.lifecycle import tarball
from images.serializers import ImageListQuerySerializer, validated


class ImageRangeSerializer(serializers.Serializer):
    """For the schema: the listing's ``from`` and ``to``."""

    def get_fields(self) -> dict[str, serializers.Field]:
        return {
            "from": serializers.DateTimeField(required=False, help_text="inclusive"),
            "to": serializers.DateTimeField(required=False, help_text="exclusive"),
        }


class DeviceExportView(APIView):
    """Served outside DRF's request cycle (a byte stream, not a negotiated representation)."""

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return device_export(request, kwargs["device_id"])

    @extend_schema(
        operation_id="device_export",
        summary="A device's images as one tar file",
        description="For each image in time order: its bytes named as its download's file name "
        "and `<name>.json`, its metadata. `from` and `to` as for the listing. In token mode: a "
        "reader token or the device's own.",
        parameters=[ImageRangeSerializer],
        responses={
            (200, "application/x-tar"): OpenApiResponse(openapi.BINARY, "The tarball."),
            **openapi.errors(400, 401, 403, 404),
        },
    )
    def get(self, request: HttpRequest, device_id: str) -> HttpResponse:
        return device_export(request, device_id)


def device_export(request: HttpRequest, device_id: str) -> HttpResponse:
    answer = unless_safe(request)
    if answer is not None:
        return answer
    try:
        auth.check_export(request, device_id)
        query = validated(ImageListQuerySerializer, request.GET)
        images = tarball.device_images_all(device_id, query.get("start"), query.get("end"))
        # The first page is read now, so that an unknown device is a 404
        # rather than a tarball that breaks off.
        first = list(itertools.islice(images, 1))
    except Exception as exc:  # noqa: BLE001 - every error becomes a contract error
        return response_for_exception(request, exc)
    body = tarball.tarball_stream(itertools.chain(first, images))
    response = StreamingHttpResponse(
        iter(()) if request.method == "HEAD" else body, content_type="application/x-tar"
    )
    name = f"{device_id}.tar"
    response["Content-Disposition"] = (
        f"attachment; filename=\"{safe_name(name)}\"; filename*=UTF-8''{quote(name, safe='')}"
    )
    # The tarball grows as the device sends images: always revalidate.
    response["Cache-Control"] = access.cache_control(None)
    response["X-Content-Type-Options"] = "nosniff"
    return response
