"""One signed ``POST`` of an event to a webhook, on the deliverer's event loop.

Every webhook of a deliverer shares one asyncio event loop
(:mod:`images.delivery.sending`): each receiver keeps one connection and one
request in flight (its events go in order), and a slow or dead receiver
only ever waits on its own socket.

Why not a client library: measured (docs/performance.md, "One event loop"),
a POST to a kept-alive local receiver cost about 190 µs of CPU through
``http.client`` in a thread per receiver (11 context switches per POST),
100 µs through aiohttp's client and 108 µs through asyncio with h11, against
25 µs here. The request is a fixed form written below; what comes back is
parsed by httptools (llhttp, the parser of Node.js and uvicorn): status,
headers, chunked or counted or close-delimited bodies, keep-alive.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from urllib.parse import quote, urlsplit

import httptools
from django.conf import settings

from images.delivery.models import Receiver
from images.delivery.outbox import Event
from images.delivery.webhooks import DELIVERED, USER_AGENT, Outcome, signature

# The answer's body is read and dropped; past this much the connection is
# closed rather than drained (the status decides the outcome).
ANSWER_BODY_MAX = 64 * 1024

# The answers worth another attempt (RFC 9110: the request may succeed
# later); every other 4xx says this event will never be accepted.
_RETRIED_STATUSES = frozenset({408, 425, 429})
_NOT_VISIBLE = re.compile(r"[^\x21-\x7e]")


class Poster:
    """One receiver's kept-alive connection, and one signed ``POST`` per event."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        parts = urlsplit(receiver.url)
        https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if https else 80)
        self._ssl = ssl.create_default_context() if https else None
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        # A URL registered before webhook add refused spaces and the like.
        target = _NOT_VISIBLE.sub(lambda found: quote(found.group()), target)
        host = parts.netloc if parts.netloc.isascii() else parts.netloc.encode("idna").decode()
        self._head = (
            f"POST {target} HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: application/json\r\nUser-Agent: {USER_AGENT}\r\n"
        ).encode("ascii")
        self._timeout = settings.IMAGES_WEBHOOK_TIMEOUT  # read once, not for every event
        self._connection: _Connection | None = None

    async def post(self, event: Event) -> Outcome:
        """One attempt to deliver ``event``."""
        body = event.payload.encode()
        request = b"".join(
            (
                self._head,
                f"Images-Event: {event.kind}\r\n"
                f"Images-Delivery: {self.receiver.pk}-{event.seq}\r\n"
                f"Images-Signature: {signature(self.receiver.secret, body)}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode("ascii"),
                body,
            )
        )
        timeout = self._timeout
        try:
            connection = await self._connected(timeout)
            status, retry_after = await connection.exchange(request, timeout)
        except TimeoutError:
            self.close()
            return Outcome("retry", f"TimeoutError: no answer within {timeout} s")
        except (OSError, httptools.HttpParserError) as exc:
            self.close()
            return Outcome("retry", _short(f"{type(exc).__name__}: {exc}"))
        if 200 <= status < 300:
            return DELIVERED
        reason = f"HTTP {status}"
        if status >= 500 or status in _RETRIED_STATUSES:
            return Outcome("retry", reason, _retry_after(retry_after))
        return Outcome("refused", reason)

    async def _connected(self, timeout: float) -> _Connection:
        if self._connection is None or self._connection.closed:
            loop = asyncio.get_running_loop()
            async with asyncio.timeout(timeout):
                _, self._connection = await loop.create_connection(
                    lambda: _Connection(loop), self._host, self._port, ssl=self._ssl
                )
        return self._connection

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


class _Connection(asyncio.Protocol):
    """One connection to a receiver: a request written, its answer parsed as it arrives."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.closed = False
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[tuple[int, str | None]] | None = None
        self._status = 0
        self._retry_after: str | None = None
        self._body = 0

    async def exchange(self, request: bytes, timeout: float) -> tuple[int, str | None]:
        """Write ``request``; the final answer's status and its ``Retry-After``.

        TimeoutError when the answer has not ended within ``timeout`` s (one
        timer, not ``asyncio.timeout``: this runs for every event).
        """
        assert self._transport is not None
        assert self._answer is None  # one request at a time on a connection
        self._answer = self._loop.create_future()
        timer = self._loop.call_later(timeout, self._fail, TimeoutError())
        self._transport.write(request)
        try:
            return await self._answer
        finally:
            timer.cancel()
            self._answer = None

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    # --- asyncio's side ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        if self._answer is None:  # an answer nobody asked for: not a receiver to keep
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._status >= 200 and self._answer is not None:
            # An answer whose body ends when the connection does.
            self._settle((self._status, self._retry_after))
        else:
            self._fail(exc or ConnectionResetError("the receiver closed the connection"))

    # --- httptools' side ---

    def on_message_begin(self) -> None:
        self._status, self._retry_after, self._body = 0, None, 0

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"retry-after":
            self._retry_after = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self._body += len(body)
        if self._body > ANSWER_BODY_MAX:
            self._settle((self._status, self._retry_after))
            self.close()

    def on_message_complete(self) -> None:
        if self._status < 200:
            return  # an interim answer (1xx): the final one follows
        if not self._parser.should_keep_alive():
            self.close()
        self._settle((self._status, self._retry_after))

    def _settle(self, answer: tuple[int, str | None]) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(answer)

    def _fail(self, exc: Exception) -> None:
        self.close()
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(exc)


def _retry_after(value: str | None) -> float:
    # Seconds only: a date is rare from a webhook receiver, and the backoff covers it.
    if value and value.strip().isdigit():
        return min(float(value.strip()), 3600.0)
    return 0.0


def _short(text: str) -> str:
    return text if len(text) <= 200 else text[:197] + "..."
