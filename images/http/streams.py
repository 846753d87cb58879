"""The event streams on an event loop: ``serve``'s stream listener (API.md §13).

``serve`` runs this ASGI application in its own granian process, on
``--events-port``. Measured (docs/live.md): the WSGI workers cannot hold a
stream without holding a thread each, and Django's ASGI handler for the
whole API serves ordinary requests at 10 to 50 % of the WSGI rate; so
ordinary requests stay on WSGI, whose workers send up to 64 streams each
on the API port (:mod:`images.http.stream_threads`), and ``/events`` and
``/devices/{deviceId}/events`` are also served here, for the gallery's pages
and for many watchers behind a proxy: an open stream is a subscription and
a coroutine (about 26 KB), not a thread.

Each stream is opened exactly as the WSGI view opens it: the same Django
request (with its session, for the gallery's logged-in staff), the same
checks (:func:`images.http.live.watch_for`) and errors, in a worker thread
because they read the database; then :func:`images.http.sse.sse_stream_async`
runs on the loop. Everything else here is a 404.

Browsers reach this listener from a page served by the WSGI port: a
different origin (the port differs). An ``Origin`` on the same host name is
allowed, with credentials (cookies belong to the host, not the port); any
other origin gets no CORS headers, so browsers refuse it.
"""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.handlers.asgi import ASGIRequest
from django.db import close_old_connections
from django.http import HttpResponse

from formats.errors import error_response, unless_safe
from images import live
from images.http import live as http_live
from images.http import sse
from images.http.errors import response_for_exception

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

# As the API's routes (config/urls.py): a device id may hold "/", sent as %2F
# or not (the path arrives decoded either way).
_PATH = re.compile(r"^/(?:devices/(?P<device_id>.+)/)?events$")


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    opened = await sync_to_async(_open, thread_sensitive=False)(scope)
    if isinstance(opened, HttpResponse):
        await _send_response(send, opened, _cors(scope))
        return
    watch, response = opened
    chunks = sse.sse_stream_async(watch, asyncio.get_running_loop())
    try:
        # The answer starts once the stream hears the channel (its first chunk).
        first = await anext(chunks)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": _headers(response) + _cors(scope),
            }
        )
        if scope["method"] == "GET":
            await send({"type": "http.response.body", "body": first, "more_body": True})
            await _stream(chunks, watch, receive, send)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except OSError:
        return  # the connection broke while sending
    finally:
        await chunks.aclose()
        watch.release()


def _open(scope: Scope) -> HttpResponse | tuple[live.Watch, HttpResponse]:
    """The watch this request may open, and its response's headers; or the error to send."""
    close_old_connections()
    try:
        request = ASGIRequest(scope, io.BytesIO())
        try:
            # The session and its user, as the WSGI middleware would set them.
            SessionMiddleware(_no_view).process_request(request)
            AuthenticationMiddleware(_no_view).process_request(request)
            request.get_host()  # ALLOWED_HOSTS, as everywhere else
            match = _PATH.match(scope["path"])
            if match is None:
                return error_response(request, 404, {"path": ["no such stream"]})
            answer = unless_safe(request)
            if answer is not None:
                return answer
            watch = http_live.watch_for(request, match["device_id"])
        except Exception as exc:  # noqa: BLE001 - every error becomes a contract error
            return response_for_exception(request, exc)
        response = HttpResponse(content_type=f"{sse.MEDIA_TYPE}; charset=utf-8")
        http_live.stream_headers(response)
        return watch, response
    finally:
        close_old_connections()


def _no_view(request: Any) -> None:  # the middleware's get_response, never called
    return None


async def _stream(
    chunks: AsyncIterator[bytes], watch: live.Watch, receive: Receive, send: Send
) -> None:
    """Send the stream's chunks until it ends or the client goes away.

    The client going away closes the subscription, which ends the stream
    where it waits: no task for each chunk, which at hundreds of events a
    second on each of hundreds of streams is most of the cost.
    """
    gone = asyncio.ensure_future(_disconnected(receive))
    gone.add_done_callback(lambda _: _close(watch))
    try:
        async for chunk in chunks:
            if gone.done():
                return
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    finally:
        gone.cancel()


def _close(watch: live.Watch) -> None:
    if watch.subscription is not None:
        watch.subscription.close("gone")


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            # Shutting down: end every open stream, so that its client
            # reconnects (to another instance, or to this one restarted).
            live.hub().gap()
            await send({"type": "lifespan.shutdown.complete"})
            return


def _headers(response: HttpResponse) -> list[tuple[bytes, bytes]]:
    return [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in response.items()
    ]


async def _send_response(send: Send, response: HttpResponse, extra: list) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": _headers(response) + extra,
        }
    )
    await send({"type": "http.response.body", "body": response.content})


def _cors(scope: Scope) -> list[tuple[bytes, bytes]]:
    """CORS headers for the service's own pages (the API's origin) and the allowed origins.

    The service's own origin is ``http://<the host asked for>:<the API's
    port>``, exactly: not any port or scheme of the same host name (API.md
    §15); ``IMAGES_EVENTS_ALLOWED_ORIGINS`` adds others. Any other origin
    gets no CORS headers, so browsers refuse it.
    """
    headers = dict(scope.get("headers", []))
    origin = headers.get(b"origin", b"").decode("latin-1")
    host = headers.get(b"host", b"").decode("latin-1")
    if not origin or not host:
        return []
    try:
        name = urlsplit(f"//{host}").hostname
    except ValueError:
        return []
    own = f"http://{name}:{settings.IMAGES_API_PORT}" if name and settings.IMAGES_API_PORT else ""
    if origin not in (own, *settings.IMAGES_EVENTS_ALLOWED_ORIGINS):
        return []
    return [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-allow-credentials", b"true"),
        (b"vary", b"Origin"),
    ]
