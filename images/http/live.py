"""HTTP for the live views of API.md §13: ``latest`` and the event streams.

``GET /devices/{deviceId}/images/latest`` is a download (the rules of §3)
whose answer changes: ``Cache-Control: no-cache`` (clients revalidate with
the ETag every time), and ``Content-Location`` names the image by id.

``GET /devices/{deviceId}/events`` and ``GET /events`` are served here as
a blocking stream: by the development server, and under ``serve`` by its
HTTP workers on the API port, each stream sent from a thread of its own, at
most ``IMAGES_EVENTS_THREADS`` per worker (:mod:`images.http.stream_threads`).
``serve``'s stream listener (:mod:`images.http.streams`) serves the same
paths on an event loop, with the same checks (:func:`watch_for`) and the
same stream (:mod:`images.http.sse`), for the gallery's pages and proxies.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.utils.cache import patch_vary_headers
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.views import APIView

from formats.errors import unless_safe
from images import access, identity, live
from images.http import auth, openapi, sse, stream_threads
from images.http.downloads import is_conditional, not_modified_response
from images.http.errors import response_for_exception
from images.http.views import image_or_metadata


class LatestImageView(APIView):
    """Served outside DRF's request cycle, as downloads are (see ``DownloadFastPath``)."""

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return latest_image(request, kwargs["device_id"])

    @extend_schema(
        operation_id="device_latest_image",
        summary="A device's newest image (by timestamp), or its metadata",
        description="The rules of the other downloads, with `Cache-Control: no-cache`: it "
        "changes when the device sends a newer image. `Content-Location` names the image. "
        "In token mode: a reader token or the device's own.",
        parameters=[*openapi.CONDITIONAL_HEADERS, *openapi.DOWNLOAD_HEADERS],
        responses=openapi.download_responses("The device's newest image."),
    )
    def get(self, request: HttpRequest, device_id: str) -> HttpResponse:
        return latest_image(request, device_id)


def latest_image(request: HttpRequest, device_id: str) -> HttpResponse:
    answer = unless_safe(request)
    if answer is not None:
        return answer
    try:
        live.watch_check(identity.request_principal(request), device_id)
        image = live.image_latest(device_id)
        response = (
            not_modified_response(request, image, immutable=False)
            if is_conditional(request)
            else None
        )
        if response is None:
            response = image_or_metadata(request, image, immutable=False)
        response["Content-Location"] = image.href
        response["Cache-Control"] = access.cache_control(None)
    except Exception as exc:  # noqa: BLE001 - every error becomes a contract error
        response = response_for_exception(request, exc)
    patch_vary_headers(response, ["Accept", *auth.vary_on()])
    return response


_EVENTS_DESCRIPTION = (
    "`text/event-stream`. For each image stored afterwards (by any front end of any "
    "instance): `event: image`, `id: <image id>`, `data: <its metadata as JSON>`. With "
    "`Last-Event-ID`, what was stored after that image first (at most 1000 events; the stream "
    "then ends and the client resumes). A comment line every IMAGES_EVENTS_KEEPALIVE seconds."
)
_EVENTS_RESPONSES = {
    (200, sse.MEDIA_TYPE): OpenApiResponse(description="The stream."),
    **openapi.errors(401, 403, 406),
}
_LAST_EVENT_ID = openapi.header("Last-Event-ID", [200], "The last event's id, to resume after.")


class EventsView(APIView):
    """``/events``: every device's images, outside DRF's request cycle (a stream)."""

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return events_stream(request, kwargs.get("device_id"))

    @extend_schema(
        operation_id="events",
        summary="Server-sent events: every device's images, as they are stored",
        description=_EVENTS_DESCRIPTION + " In token mode: a reader token.",
        parameters=[_LAST_EVENT_ID],
        responses=_EVENTS_RESPONSES,
    )
    def get(self, request: HttpRequest) -> HttpResponse:
        return events_stream(request, None)


class DeviceEventsView(EventsView):
    """``/devices/{deviceId}/events``: one device's images."""

    @extend_schema(
        operation_id="device_events",
        summary="Server-sent events: a device's images, as they are stored",
        description=_EVENTS_DESCRIPTION + " In token mode: a reader token or the device's own.",
        parameters=[_LAST_EVENT_ID],
        responses=_EVENTS_RESPONSES,
    )
    def get(self, request: HttpRequest, device_id: str) -> HttpResponse:  # type: ignore[override]
        return events_stream(request, device_id)


def watch_for(request: HttpRequest, device_id: str | None) -> live.Watch:
    """The watch this request may open (401, 403, 406 otherwise): every front end's first step."""
    if request.headers.get("Accept") and request.get_preferred_type([sse.MEDIA_TYPE]) is None:
        from rest_framework.exceptions import NotAcceptable

        raise NotAcceptable(f"events are served as {sse.MEDIA_TYPE}")
    token = identity.request_token(request)
    principal = identity.principal_for(
        token, staff=token is None and identity.request_staff(request)
    )
    return live.watch_open(
        principal,
        device_id,
        last_event_id=request.headers.get("Last-Event-ID", ""),
        token_id=None if token is None else token.pk,
        # Behind a proxy, the client it reports: not the proxy for everyone.
        client=auth.client_address(request),
    )


def stream_headers(response: HttpResponse) -> None:
    # Never cached, never buffered on the way (nginx reads X-Accel-Buffering).
    response["Cache-Control"] = "no-store"
    response["X-Accel-Buffering"] = "no"
    response["X-Content-Type-Options"] = "nosniff"


def events_stream(request: HttpRequest, device_id: str | None) -> HttpResponse:
    """The stream, served in place: no redirect, which would lose ``Authorization`` (API.md §15)."""
    answer = unless_safe(request)
    if answer is not None:
        return answer
    try:
        watch = watch_for(request, device_id)
        if request.method == "HEAD":
            watch.release()  # a HEAD holds no stream
            body: Iterator[bytes] = iter(())
        else:
            body = stream_threads.stream_body(watch)  # 503 past the worker's streams
    except Exception as exc:  # noqa: BLE001 - every error becomes a contract error
        return response_for_exception(request, exc)
    response = StreamingHttpResponse(body, content_type=f"{sse.MEDIA_TYPE}; charset=utf-8")
    stream_headers(response)
    return response
