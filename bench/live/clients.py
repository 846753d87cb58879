"""The watcher side of ``python -m bench.live``: every client, in one asyncio loop of its own.

``SseClient`` (one event stream on a raw socket), ``Registration`` and
``CoapSocket`` (CoAP Observe registrations, hand-built on UDP sockets),
``Watcher`` (all of them, stamping each arrival with ``time.time()``),
``watcher_main`` (the child process's loop, driven over a pipe) and
``WatcherProcess`` (the parent's handle on it). The child is forked, so it
needs no import; were it spawned, it would import this module as
``bench.live.clients`` (the bench runs from the repository root, which the
child's ``sys.path`` would start with too).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import multiprocessing
import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

SSE_MARKER = b"event: image\nid: "
WATCHER_NICE = 10
# CoAP message types (RFC 7252 §3), as the first byte's bits 4-5.
CON, NON, ACK, RST = 0, 1, 2, 3


class SseClient(asyncio.Protocol):
    """One event stream on a raw socket: finds each ``event: image`` and its ``id``.

    No de-chunking: the listener may send several events in one chunk
    (coalesced) but never splits an event across chunks, so the chunk framing
    never falls inside an event; the marker is searched for in the bytes as they
    come, every event in a read in turn, keeping a short tail for one split
    across two reads.
    """

    def __init__(self, watcher: Watcher, index: int, request: bytes) -> None:
        self.watcher = watcher
        self.index = index
        self.request = request
        self.head = b""
        self.tail = b""
        self.status = 0
        self.ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if not self.status:
            self.head += data
            if b"\r\n\r\n" not in self.head:
                return
            head, _, data = self.head.partition(b"\r\n\r\n")
            self.head = b""
            self.status = int(head.split(b" ", 2)[1])
            if self.status != 200:
                self.ready.set_result(self.status)
                return
        if not self.ready.done() and data:
            self.ready.set_result(self.status)  # the preamble: subscribed
        buffer = self.tail + data
        if not self.watcher.recording:
            # Only counted (the rate rounds): in C, so that this process, which
            # stands for dashboards elsewhere, takes less of the server's CPU.
            self.watcher.sse_counts[self.index] += buffer.count(SSE_MARKER)
            self.tail = buffer[max(0, len(buffer) - len(SSE_MARKER) + 1) :]
            return
        position = 0
        while (at := buffer.find(SSE_MARKER, position)) >= 0:
            end = buffer.find(b"\n", at + len(SSE_MARKER))
            if end < 0:
                self.tail = buffer[at:]
                break
            self.watcher.sse_event(self.index, buffer[at + len(SSE_MARKER) : end], now)
            position = end
        else:
            self.tail = buffer[max(position, len(buffer) - len(SSE_MARKER) - 40) :]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_result(self.status or -1)
        if not self.closing:
            self.watcher.ended += 1


@dataclass(eq=False)
class Registration:
    index: int
    device: str
    token: bytes
    sock: CoapSocket
    observing: bool = False
    waiter: asyncio.Future | None = None


class CoapSocket(asyncio.DatagramProtocol):
    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher
        self.transport: asyncio.DatagramTransport | None = None
        self.mids = itertools.count(int.from_bytes(os.urandom(2), "big"))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.watcher.coap_datagram(self, data)

    def error_received(self, exc: Exception) -> None:
        self.watcher.coap_errors[type(exc).__name__] += 1

    def next_mid(self) -> int:
        return next(self.mids) & 0xFFFF


class Watcher:
    def __init__(self, host: str, events_port: int, coap_port: int) -> None:
        self.host = host
        self.events_port = events_port
        self.coap_port = coap_port
        self.confirmable = True
        self.streams: list[SseClient] = []
        self.registrations: list[Registration] = []
        self.sockets: list[CoapSocket] = []
        self.by_token: dict[bytes, Registration] = {}
        self.tokens = itertools.count(1)
        self.recording = False
        self.reset()

    def reset(self) -> None:
        self.sse_arrivals: dict[str, list[tuple[int, float]]] = defaultdict(list)
        self.coap_arrivals: dict[str, list[tuple[int, float]]] = defaultdict(list)
        self.sse_counts: Counter[int] = Counter()
        self.coap_counts: Counter[int] = Counter()
        self.ended = 0
        self.coap_unmatched = 0
        self.coap_errors: Counter[str] = Counter()

    # -- arrivals

    def sse_event(self, index: int, image_id: bytes, now: float) -> None:
        self.sse_counts[index] += 1
        if self.recording:
            self.sse_arrivals[image_id.decode("ascii", "replace")].append((index, now))

    def coap_datagram(self, sock: CoapSocket, data: bytes) -> None:
        from aiocoap import Message

        now = time.time()
        if len(data) < 4:
            return
        mtype, token_length, code = (data[0] >> 4) & 3, data[0] & 0x0F, data[1]
        token = data[4 : 4 + token_length]
        registration = self.by_token.get(token)
        if mtype == CON:  # acknowledge; reset what we no longer observe
            kind = (ACK if registration is not None else RST) << 4
            assert sock.transport is not None
            sock.transport.sendto(bytes((0x40 | kind, 0)) + data[2:4])
        if code == 0:
            return  # an empty ACK (the answer follows) or RST
        if registration is None:
            self.coap_unmatched += 1
            return
        message = Message.decode(data)
        waiter = registration.waiter
        if (
            waiter is not None
            and not waiter.done()
            and (not registration.observing or message.opt.observe is None)
        ):
            waiter.set_result(message)
        elif registration.observing and message.opt.observe is not None:
            self.coap_counts[registration.index] += 1
            if self.recording:
                etag = (message.opt.etag or b"").hex()
                self.coap_arrivals[etag].append((registration.index, now))
        else:
            self.coap_unmatched += 1

    # -- commands

    async def open(
        self, paths: list[str], devices: list[str], per_socket: int, confirmable: bool
    ) -> dict:
        loop = asyncio.get_running_loop()
        self.confirmable = confirmable
        started = time.monotonic()
        gate = asyncio.Semaphore(100)
        first = len(self.streams)

        async def connect(index: int, path: str) -> int | str:
            request = (
                f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.events_port}\r\n"
                "Accept: text/event-stream\r\n\r\n"
            ).encode()
            client = SseClient(self, index, request)
            self.streams.append(client)
            async with gate:
                try:
                    await asyncio.wait_for(
                        loop.create_connection(lambda: client, self.host, self.events_port), 30
                    )
                    return await asyncio.wait_for(asyncio.shield(client.ready), 30)
                except (OSError, TimeoutError) as exc:
                    return type(exc).__name__

        statuses = await asyncio.gather(
            *(connect(first + number, path) for number, path in enumerate(paths))
        )
        streams_seconds = time.monotonic() - started

        started = time.monotonic()
        first = len(self.registrations)
        for _ in range(math.ceil(len(devices) / per_socket)):
            transport, sock = await loop.create_datagram_endpoint(
                lambda: CoapSocket(self), remote_addr=(self.host, self.coap_port)
            )
            sock.transport = transport
            self.sockets.append(sock)
        fresh = self.sockets[len(self.sockets) - math.ceil(len(devices) / per_socket) :]
        created = []
        for number, device in enumerate(devices):
            registration = Registration(
                index=first + number,
                device=device,
                token=next(self.tokens).to_bytes(4, "big"),
                sock=fresh[number // per_socket],
            )
            self.by_token[registration.token] = registration
            created.append(registration)
        self.registrations.extend(created)

        async def register(registration: Registration) -> str:
            async with gate:
                answer = await self.request(registration, observe=0)
            if answer is None:
                return "timeout"
            if answer.opt.observe is not None and answer.code.is_successful():
                registration.observing = True
                return "observing"
            return f"{answer.code} without Observe"

        outcomes = await asyncio.gather(*(register(r) for r in created))
        return {
            "streams": Counter(statuses),
            "streams_seconds": streams_seconds,
            "observers": Counter(outcomes),
            "observers_seconds": time.monotonic() - started,
            "observing": [r.index for r in created if r.observing],
        }

    async def request(self, registration: Registration, *, observe: int) -> Any:
        """GET ``latest`` with this registration's token; the answer, or None (no answer)."""
        from aiocoap import GET, Message
        from aiocoap.numbers.types import Type

        message = Message(
            code=GET, uri_path=("devices", registration.device, "images", "latest"), observe=observe
        )
        message.token = registration.token
        message.mtype = Type.CON if self.confirmable else Type.NON
        message.mid = registration.sock.next_mid()
        data = message.encode()
        registration.waiter = asyncio.get_running_loop().create_future()
        assert registration.sock.transport is not None
        for timeout in (2.0, 3.0, 5.0, 8.0):
            registration.sock.transport.sendto(data)
            try:
                return await asyncio.wait_for(asyncio.shield(registration.waiter), timeout)
            except TimeoutError:
                continue
        return None

    async def close(self) -> dict:
        started = time.monotonic()
        for client in self.streams:
            client.closing = True
            if client.transport is not None:
                client.transport.close()
        self.streams = []
        gate = asyncio.Semaphore(100)

        async def deregister(registration: Registration) -> bool:
            if not registration.observing:
                return True
            async with gate:
                # RFC 7641 §3.6: a GET with Observe: 1 and the same token.
                answer = await self.request(registration, observe=1)
            registration.observing = False
            return answer is not None

        answered = await asyncio.gather(*(deregister(r) for r in self.registrations))
        for registration in self.registrations:
            self.by_token.pop(registration.token, None)
        self.registrations = []
        for sock in self.sockets:
            if sock.transport is not None:
                sock.transport.close()
        self.sockets = []
        await asyncio.sleep(0.5)  # let the listener see the disconnections
        return {
            "seconds": time.monotonic() - started,
            "deregistered": sum(answered),
            "unanswered": len(answered) - sum(answered),
        }

    async def collect(self, recording: bool) -> dict:
        """What arrived since the last collect; then record arrivals (or only count them)."""
        found = {
            "sse": dict(self.sse_arrivals),
            "coap": dict(self.coap_arrivals),
            "sse_counts": dict(self.sse_counts),
            "coap_counts": dict(self.coap_counts),
            "ended": self.ended,
            "coap_unmatched": self.coap_unmatched,
            "coap_errors": dict(self.coap_errors),
            "cpu": time.process_time(),
        }
        self.reset()
        self.recording = recording
        return found


def watcher_main(conn: Connection, host: str, events_port: int, coap_port: int) -> None:
    # The dashboards it stands for run on other machines: here it shares the
    # server's 2 cores, so it yields them to the server (its CPU is printed).
    os.nice(WATCHER_NICE)

    async def run() -> None:
        watcher = Watcher(host, events_port, coap_port)
        commands: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        loop.add_reader(conn.fileno(), lambda: commands.put_nowait(conn.recv()))
        while True:
            name, *arguments = await commands.get()
            if name == "quit":
                await watcher.close()
                conn.send("bye")
                return
            conn.send(await getattr(watcher, name)(*arguments))

    asyncio.run(run())


class WatcherProcess:
    """The watcher in its own process, driven over a pipe."""

    def __init__(self, host: str, events_port: int, coap_port: int) -> None:
        context = multiprocessing.get_context("fork")
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=watcher_main, args=(child, host, events_port, coap_port), daemon=True
        )
        self.process.start()

    def call(self, name: str, *arguments: Any, timeout: float = 600) -> Any:
        self.conn.send((name, *arguments))
        if not self.conn.poll(timeout):
            raise RuntimeError(f"the watcher did not answer {name!r} within {timeout} s")
        return self.conn.recv()

    def stop(self) -> None:
        if self.process.is_alive():
            with contextlib.suppress(OSError, EOFError, RuntimeError):
                self.call("quit", timeout=120)
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
