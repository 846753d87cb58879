"""Event streams on ``serve``'s API port: each sent from a thread of its own (API.md §15).

Granian's WSGI worker runs every request in one thread (``--blocking-threads
1``: measured fastest, docs/live.md), and sends a response's body by
iterating it in the thread that called the application: an event stream,
which never ends by itself, would hold that thread, and the worker with it.
More blocking threads would let the worker go on, but then ordinary
requests run on several threads too, and cost about 15 % more CPU each
(measured, docs/live.md).

So ordinary requests keep the one thread, and a stream is handed over once
its checks have passed: granian's protocol object sends a response from
whichever thread calls it, so the stream's body is iterated by a thread
started for it (:func:`send_streams_from_own_threads`), and the request
thread goes on at once. At most ``IMAGES_EVENTS_THREADS`` streams per
worker (``serve --api-streams``); past them ``503`` with ``Retry-After``,
at once.

On SIGTERM granian lets in-flight responses finish, and a stream never
finishes by itself: the worker's streams are ended at once
(:func:`end_streams_on_shutdown`; their clients reconnect with
``Last-Event-ID`` and miss nothing), so that the worker stops when its
uploads are done, not at the kill timeout.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from django.conf import settings
from django.db import connections

from images.errors import Unavailable
from images.http import sse
from images.live import Watch, hub

log = logging.getLogger(__name__)

# The stream paths, as the API's routes (config/urls.py) read them.
STREAM_PATH = re.compile(r"^/(?:devices/.+/)?events$")

_taken = 0
_taken_lock = threading.Lock()
_stopping = threading.Event()


def stream_body(watch: Watch) -> Iterator[bytes]:
    """``watch``'s stream, counted against this worker's streams until it ends.

    Raises :class:`Unavailable` (503, ``Retry-After``) when the worker holds
    as many as it may, or is stopping; ``watch`` is then released.
    """
    if not _take():
        watch.release()
        raise Unavailable(
            "this server holds as many event streams as it may; try again later"
            " (or use the stream listener's port: docs/live.md)"
        )
    return _Held(watch)


def _take() -> bool:
    global _taken
    most = settings.IMAGES_EVENTS_THREADS
    with _taken_lock:
        if _stopping.is_set() or (most >= 0 and _taken >= most):
            return False
        _taken += 1
        return True


def _give_back() -> None:
    global _taken
    with _taken_lock:
        _taken -= 1


class _Held:
    """The stream's chunks; closing it (as the server does, always) frees its place.

    A class, not a generator: a generator closed before its first chunk
    runs no ``finally``, and the place and the client's count would leak.
    """

    def __init__(self, watch: Watch) -> None:
        self._watch = watch
        self._chunks = sse.sse_stream(watch)
        self._held = True
        self._started = False

    def __iter__(self) -> _Held:
        return self

    def __next__(self) -> bytes:
        if _stopping.is_set():
            raise StopIteration  # (the shutdown closed the subscription, or is about to)
        chunk = next(self._chunks)
        if not self._started:
            # The replay is read: a stream open for hours holds no database
            # connection (on PostgreSQL, one per stream would add up).
            self._started = True
            connections.close_all()
        return chunk

    def close(self) -> None:
        self._chunks.close()
        self._watch.release()
        if self._held:
            self._held = False
            _give_back()


# --- Granian: a stream's body sent from a thread of its own -------------------


def send_streams_from_own_threads() -> None:
    """In a ``serve`` HTTP worker, as the application loads: streams leave the request thread.

    Granian's worker wraps the application it loaded with
    ``granian.server.mp._wsgi_call_wrap`` (its ``_runner``: the environ, the
    call, then ``proto.response_iter`` or ``response_bytes``), looked up
    when the worker starts, after loading the application. Wrapping that
    wrapper, a GET on a stream path gets a stand-in protocol whose
    ``response_iter`` runs in a new thread. Granian's protocol object is
    thread-safe (a one-shot channel to the connection), and the connection
    waits for it whichever thread answers. (Pinned granian, 2.8; the tests
    through ``serve`` fail if this stops holding.)
    """
    from granian.server import mp

    wrap = mp._wsgi_call_wrap
    if getattr(wrap, "streams_apart", False):
        return

    def streams_apart(callback: Callable, *args: Any, **kwargs: Any) -> Callable:
        runner = wrap(callback, *args, **kwargs)

        def run(proto: Any, scope: dict) -> Any:
            if scope.get("REQUEST_METHOD") == "GET" and STREAM_PATH.match(
                scope.get("PATH_INFO", "")
            ):
                proto = _OwnThread(proto)
            return runner(proto, scope)

        return run

    streams_apart.streams_apart = True  # type: ignore[attr-defined]
    mp._wsgi_call_wrap = streams_apart


class _OwnThread:
    """Granian's protocol object, but a streaming body is sent from a new thread."""

    def __init__(self, proto: Any) -> None:
        self._proto = proto

    def response_bytes(self, status: int, headers: list, body: bytes) -> None:
        self._proto.response_bytes(status, headers, body)

    def response_iter(self, status: int, headers: list, body: Any) -> None:
        # (body: granian's wrapper around Django's response; errors are not streaming.)
        if not getattr(getattr(body, "inner", None), "streaming", False):
            self._proto.response_iter(status, headers, body)
            return
        sender = threading.Thread(
            target=self._proto.response_iter,
            args=(status, headers, body),
            name="event-stream",
            daemon=True,
        )
        try:
            sender.start()
        except RuntimeError:  # no thread to be had: refuse, never hold the request thread
            log.exception("no thread for an event stream")
            body.close()
            self._proto.response_bytes(503, [("retry-after", "5")], b"")


# --- SIGTERM: end the worker's streams -----------------------------------------


def end_streams_on_shutdown() -> None:
    """In a ``serve`` HTTP worker: end its streams when it is told to stop (SIGTERM, SIGINT).

    Granian's own handlers take those signals; a wakeup file descriptor
    hears them beside, whatever handler runs. Only from the main thread
    (where the worker loads the application), and only if no one else uses
    the wakeup descriptor.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    read, write = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(write, False)
    previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    if previous != -1:  # someone else's: leave it to them
        signal.set_wakeup_fd(previous)
        os.close(read)
        os.close(write)
        return
    threading.Thread(target=_await_stop, args=(read,), name="streams-stop", daemon=True).start()


def _await_stop(read: int) -> None:
    stops = {signal.SIGTERM, signal.SIGINT}
    with contextlib.suppress(OSError):
        while received := os.read(read, 64):
            if stops.intersection(received):
                stop_streams()
                # A stream that was subscribing just then: once more, a moment later.
                time.sleep(1.0)
                hub().gap()
                return


def stop_streams() -> None:
    """End every stream of this process now, and open no more (503 from now on)."""
    _stopping.set()
    hub().gap()
    log.info("stopping: the event streams of this worker were ended")
