"""``GET /devices/{deviceId}/export?from=&to=``: a device's images as one tar stream (API.md §11).

Served outside DRF's request cycle, like downloads: the answer is a stream
of bytes in constant memory (:func:`images.archive.export_stream`), not a
negotiated representation. Errors are the contract's, from
:func:`images.http.errors.response_for_exception`.
"""

from __future__ import annotations

import itertools
from urllib.parse import quote

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from formats.errors import error_response
from images import archive
from images.filenames import safe_name
from images.http import auth
from images.http.errors import response_for_exception
from images.serializers import ImageListQuerySerializer, validated


def device_export(request: HttpRequest, device_id: str) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        response = error_response(request, 405, {"detail": [f"{request.method} not allowed"]})
        response["Allow"] = "GET, HEAD"
        return response
    try:
        auth.check_export(request, device_id)
        query = validated(ImageListQuerySerializer, request.GET)
        images = archive.device_images_all(device_id, query.get("start"), query.get("end"))
        # The first page is read now, so that an unknown device is a 404
        # rather than an archive that breaks off.
        first = list(itertools.islice(images, 1))
    except Exception as exc:  # noqa: BLE001 - every error becomes a contract error
        return response_for_exception(request, exc)
    body = archive.export_stream(itertools.chain(first, images))
    response = StreamingHttpResponse(
        iter(()) if request.method == "HEAD" else body, content_type="application/x-tar"
    )
    name = f"{device_id}.tar"
    response["Content-Disposition"] = (
        f"attachment; filename=\"{safe_name(name)}\"; filename*=UTF-8''{quote(name, safe='')}"
    )
    # The archive grows as the device sends images: always revalidate.
    response["Cache-Control"] = f"{auth.cache_visibility()}, no-cache"
    response["X-Content-Type-Options"] = "nosniff"
    return response
