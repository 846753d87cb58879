"""Event streams on the wire: a watch as ``text/event-stream`` (API.md §13).

The WHATWG HTML "server-sent events" format: each image as ``event:``,
``id:`` and ``data:`` lines, a ``retry:`` delay first, comment lines to keep
an idle stream open through proxies. A stream serves one
:class:`images.live.Watch`, for a thread (the development server,
:func:`sse_stream`) or an event loop (``serve``'s stream listener,
:func:`sse_stream_async`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections

from images.live import Closed, Event, Watch

MEDIA_TYPE = "text/event-stream"
# How long a browser waits before reconnecting (the stream's ``retry:`` field).
RECONNECT_MS = 2000


def sse_event(event: Event) -> bytes:
    # The metadata is compact JSON: one line, as a ``data:`` field needs.
    return b"event: image\nid: " + event.image_id.encode() + b"\ndata: " + event.metadata + b"\n\n"


def sse_chunk(events: list[Event]) -> bytes:
    """Events as one chunk: one write for a burst (or a whole replay)."""
    return b"".join(map(sse_event, events))


def sse_preamble() -> bytes:
    """The first bytes of every stream: the reconnection delay, and a comment.

    Sent at once, so that the client (and any proxy) sees the stream is open.
    """
    return f"retry: {RECONNECT_MS}\n: images events\n\n".encode()


KEEPALIVE = b": keep-alive\n\n"


def sse_stream(watch: Watch) -> Iterator[bytes]:
    """The stream for a thread: blocks between events; a comment every keep-alive interval.

    Its first bytes are sent once the process hears the channel: a client
    that has them gets every image stored from then on.
    """
    watch.subscribe()
    try:
        replayed = sse_chunk(watch.replay())
        close_old_connections()
        yield sse_preamble()
        if replayed:
            yield replayed
        if watch.truncated:
            return
        assert watch.subscription is not None
        while True:
            try:
                taken = watch.subscription.next_blocking(settings.IMAGES_EVENTS_KEEPALIVE)
            except Closed:
                return
            if taken is None:
                yield KEEPALIVE
            elif chunk := sse_chunk(watch.fresh(taken)):
                yield chunk
    finally:
        watch.unsubscribe()


async def sse_stream_async(watch: Watch, loop: object) -> AsyncIterator[bytes]:
    """The stream for an event loop: holds no thread between events (first bytes as above)."""
    watch.subscribe(loop)
    try:
        replayed = await sync_to_async(_replay_in_worker, thread_sensitive=False)(watch)
        yield sse_preamble()
        if replayed:
            yield replayed
        if watch.truncated:
            return
        assert watch.subscription is not None
        while True:
            try:
                taken = await watch.subscription.next(settings.IMAGES_EVENTS_KEEPALIVE)
            except Closed:
                return
            if taken is None:
                yield KEEPALIVE
            elif chunk := sse_chunk(watch.fresh(taken)):
                yield chunk
    finally:
        watch.unsubscribe()


def _replay_in_worker(watch: Watch) -> bytes:
    close_old_connections()
    try:
        return sse_chunk(watch.replay())
    finally:
        close_old_connections()
