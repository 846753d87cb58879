"""Live push under load: event streams and CoAP Observe next to uploads (prints figures).

    python bench/live.py [--streams 1000] [--observers 1000] [--uploads 50]
        [--interval 0.5] [--devices 5] [--all-share 0.1] [--per-socket 32] [--non]
        [--seconds 10] [--rounds 6] [--connections 4] [--rate-image PATH] [--quick]

Starts one ``manage.py serve`` (2 HTTP workers, its event-stream listener, its
CoAP endpoint and its optimiser, as deployed) on a fresh database: SQLite, or
a throwaway PostgreSQL one when DATABASE_URL names PostgreSQL. A second
process (the watcher, one asyncio loop) holds the clients: ``--streams``
server-sent event streams on raw sockets (``--all-share`` of them on
``/events``, the rest spread over ``--devices`` devices'
``/devices/{id}/events``) and ``--observers`` CoAP Observe registrations of
those devices' ``/devices/{id}/images/latest``, hand-built GETs with Observe: 0
on UDP sockets, ``--per-socket`` registrations per socket (the server's cap
per client endpoint is 32), confirmable unless ``--non``; confirmable
notifications are acknowledged. Every arrival is stamped with ``time.time()``.
The upload driver is this process. Printed:

1. Latency from the ``201`` of an upload to its event on every stream that
   watches its device (or all devices) and to the Observe notification (matched
   by its ETag, the stored sha256's first 8 bytes) of every registration of that
   device: p50, p99 and max over ``--uploads`` uploads of a distinct 8x8 PNG,
   ``--interval`` seconds apart, round robin over the devices; and the
   deliveries missing. The latency includes the watcher's own delay in reading.
2. Memory: resident set of the stream listener's granian worker
   (``config.events:application``) and of ``runcoap`` before and after the
   streams and registrations are opened (after a small warm-up batch), so KiB
   per stream and per registration; and after they are closed again.
3. Upload and download rates with wrk (``--connections`` connections, 2
   threads, ``--seconds`` each): uploads of ``--rate-image`` (default a 32x32
   noise PNG: the request path, not image work) to devices nobody watches by
   device, then downloads of one stored image by id; in ``--rounds`` rounds,
   none open and all open in ABBA order (open, none, none, open, open, none),
   so that drift falls on both sides. While open, every upload is also an event
   on each ``/events`` stream: the deliveries are counted. Each round prints
   the CPU seconds of serve's processes by role and of the watcher (it shares
   the 2 cores with the server), and the deferred optimiser's backlog: it
   grows from round to round, and the optimiser takes whatever CPU the servers
   leave idle, which makes single rounds noisy (read the means).

At the end, the serve log's errors and warnings, if any. Nothing here asserts.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/http.py would shadow the standard library's ``http`` (see there).
ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import http.client  # noqa: E402
import io  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import multiprocessing  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from multiprocessing.connection import Connection  # noqa: E402
from typing import Any  # noqa: E402

from bench import http as bench_http  # noqa: E402
from bench.support import (  # noqa: E402
    coap_ping,
    free_port,
    fresh_database,
    query_database,
    stop,
    wait_for_port,
)

FULL = {"streams": 1000, "observers": 1000, "uploads": 50, "seconds": 10, "rounds": 6}
QUICK = {"streams": 50, "observers": 50, "uploads": 10, "seconds": 3, "rounds": 2}
WARM_UP = 20  # streams and registrations opened and closed before memory is measured
SETTLE_SECONDS = 2.0
LINGER_SECONDS = 2.0
SSE_MARKER = b"event: image\nid: "
# CoAP message types (RFC 7252 §3), as the first byte's bits 4-5.
CON, NON, ACK, RST = 0, 1, 2, 3


# ---------------------------------------------------------------------------
# The watcher: every stream and registration, in one asyncio loop (a child process)


class SseClient(asyncio.Protocol):
    """One event stream on a raw socket: finds each ``event: image`` and its ``id``.

    No de-chunking: the listener sends each event as one chunk, so the chunk
    framing never falls inside an event; the marker is searched for in the bytes
    as they come, keeping a short tail for one split across two reads.
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


# ---------------------------------------------------------------------------
# The server and its processes


class Server:
    """``manage.py serve`` with HTTP, the stream listener and CoAP on free loopback ports."""

    def __init__(self, database_url: str, tmp: Path, workers: int, observers: int) -> None:
        self.port, self.events_port = free_port(), free_port()
        self.coap_port = free_port(socket.SOCK_DGRAM)
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "SECRET_KEY": "bench-only-secret",
            "ALLOWED_HOSTS": "127.0.0.1",
            "REQUEST_LOG_LEVEL": "WARNING",
            "IMAGES_OBSERVE_TOTAL": str(max(10_000, observers * 2)),
        }
        self.log_path = tmp / "serve.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
            + ["--events-port", str(self.events_port), "--coap-host", "127.0.0.1"]
            + ["--coap-port", str(self.coap_port), "--workers", str(workers)],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for_port(self.port, self.process, timeout=60)
        wait_for_port(self.events_port, self.process, timeout=60)
        deadline = time.monotonic() + 60
        while not coap_ping(self.coap_port):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"no CoAP answer on UDP {self.coap_port} (see {self.log_path})")
            time.sleep(0.2)
        self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def upload(
        self, body: bytes, device: str, timestamp: str, content_type: str = "image/png"
    ) -> tuple[dict, float]:
        """Store one image; its metadata and the ``time.time()`` at which the 201 was read."""
        path = f"/collections/images?deviceId={device}&timestamp={timestamp}"
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        self.connection.request("POST", path, body, headers)
        response = self.connection.getresponse()
        answer = response.read()
        arrived = time.time()
        if response.status != 201:
            raise RuntimeError(f"upload answered {response.status}: {answer[:300]!r}")
        return json.loads(answer), arrived

    def processes(self) -> dict[str, list[int]]:
        """serve's processes by role, found under it in /proc.

        ``events``: the stream listener's granian worker; ``coap``: runcoap;
        ``http``: the WSGI workers; ``optimiser``: the deferred optimiser.
        (Granian's main processes, whose children the workers are, are left out.)
        """
        roles = {
            "events": "config.events:application",
            "http": "config.wsgi:application",
            "coap": "runcoap",
            "optimiser": "optimize --watch",
        }
        found: dict[str, list[int]] = defaultdict(list)
        for pid in descendants(self.process.pid):
            command = cmdline(pid)
            for role, mark in roles.items():
                granian = role in ("events", "http")
                if mark in command and (not granian or mark in cmdline(parent_of(pid))):
                    found[role].append(pid)
        return found

    def log_problems(self) -> Counter[str]:
        """The log's error and warning lines, timestamps dropped, counted."""
        pattern = re.compile(r"Traceback|ERROR|WARNING|Error|Exception|exited")
        stamp = re.compile(r"^\d{4}-\d\d-\d\d [\d:,.]+ ")
        return Counter(
            stamp.sub("", line)
            for line in self.log_path.read_text(errors="replace").splitlines()
            if pattern.search(line)
        )

    def stop(self) -> None:
        self.connection.close()
        stop(self.process, timeout=60)
        self.log.close()


def parent_of(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            children[parent_of(int(entry.name))].append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.extend(children[pid])
        todo.extend(children[pid])
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def udp_counters() -> dict[str, int]:
    """The kernel's UDP counters (/proc/net/snmp): datagrams dropped show here."""
    names, values = (
        line.split()[1:]
        for line in Path("/proc/net/snmp").read_text().splitlines()
        if line.startswith("Udp:")
    )
    return dict(zip(names, map(int, values), strict=True))


def rss_kib(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1))


# ---------------------------------------------------------------------------
# The driver


@dataclass
class Layout:
    """What each stream and each registration watches."""

    devices: list[str]
    paths: list[str]  # per stream: /events or /devices/{id}/events
    watched: list[str | None]  # per stream: its device, None for all
    observed: list[str]  # per registration: its device
    observing: list[int] = field(default_factory=list)  # registrations the server accepted

    @classmethod
    def make(cls, streams: int, observers: int, devices: int, all_share: float) -> Layout:
        names = [f"live-{number}" for number in range(devices)]
        every = round(streams * all_share)
        watched: list[str | None] = [None] * every
        watched += [names[number % devices] for number in range(streams - every)]
        paths = ["/events" if d is None else f"/devices/{d}/events" for d in watched]
        observed = [names[number % devices] for number in range(observers)]
        return cls(names, paths, watched, observed)


def small_png(number: int) -> bytes:
    """An 8x8 PNG of one colour, a different one per ``number``: its own sha256, so ETag."""
    from PIL import Image

    colour = (number & 0xFF, (number >> 8) & 0xFF, (number >> 16) & 0xFF)
    out = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(out, "PNG")
    return out.getvalue()


def noise_png(side: int) -> bytes:
    """A ``side`` x ``side`` PNG of random pixels (little for the optimiser to gain or do)."""
    from PIL import Image

    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(out, "PNG")
    return out.getvalue()


class Stamps:
    """Increasing timestamps, from a day ago: each upload is its device's newest."""

    def __init__(self) -> None:
        self.base = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
        self.count = itertools.count(1)

    def __call__(self) -> str:
        moment = self.base + timedelta(milliseconds=next(self.count))
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def percentile(ordered: list[float], fraction: float) -> float:
    """Nearest rank."""
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def summary(latencies: list[float]) -> str:
    if not latencies:
        return "no deliveries"
    ordered = sorted(latencies)
    late = sum(value > 1.0 for value in ordered)
    return (
        f"p50 {percentile(ordered, 0.5) * 1000:7.1f} ms"
        f"  p99 {percentile(ordered, 0.99) * 1000:7.1f} ms"
        f"  max {ordered[-1] * 1000:7.1f} ms  min {ordered[0] * 1000:6.1f} ms  over 1 s: {late}"
    )


def open_all(watcher: WatcherProcess, layout: Layout, args: argparse.Namespace) -> dict:
    opened = watcher.call("open", layout.paths, layout.observed, args.per_socket, not args.non)
    layout.observing = opened["observing"]
    streams_ok = opened["streams"].get(200, 0)
    observing = len(layout.observing)
    print(
        f"opened {streams_ok}/{len(layout.paths)} streams in {opened['streams_seconds']:.1f} s"
        + _others(opened["streams"], 200)
        + f"; {observing}/{len(layout.observed)} registrations in"
        f" {opened['observers_seconds']:.1f} s" + _others(opened["observers"], "observing"),
        flush=True,
    )
    return opened


def _others(outcomes: Counter, good: Any) -> str:
    bad = {key: count for key, count in outcomes.items() if key != good}
    return f" (failed: {bad})" if bad else ""


def close_all(watcher: WatcherProcess) -> None:
    closed = watcher.call("close")
    print(
        f"closed them in {closed['seconds']:.1f} s ({closed['deregistered']} registrations"
        f" cancelled with Observe: 1, {closed['unanswered']} unanswered)",
        flush=True,
    )


def memory(server: Server) -> dict[str, int]:
    """Resident KiB of the stream listener (``events``) and of runcoap (``coap``)."""
    found = server.processes()
    return {name: sum(rss_kib(pid) for pid in found[name]) for name in ("events", "coap")}


def cpu_seconds(server: Server) -> dict[str, float]:
    """CPU seconds used so far by each role's processes (user + system)."""
    tick = os.sysconf("SC_CLK_TCK")
    used = {}
    for role, pids in server.processes().items():
        total = 0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime
        used[role] = total / tick
    return used


def print_memory(before: dict, after: dict, streams: int, observers: int, label: str) -> None:
    parts = []
    for name, count, unit in (
        ("events", streams, "stream"),
        ("coap", observers, "registration"),
    ):
        grown = after.get(name, 0) - before.get(name, 0)
        per = f", {grown / count:.1f} KiB per {unit}" if count else ""
        who = "stream listener" if name == "events" else "runcoap"
        parts.append(
            f"{who} {before.get(name, 0) / 1024:.1f} -> {after.get(name, 0) / 1024:.1f} MiB"
            f" ({grown / 1024:+.1f} MiB{per})"
        )
    print(f"RSS {label}: " + "; ".join(parts), flush=True)


def settle(server: Server, watcher: WatcherProcess, layout: Layout, stamps: Stamps) -> None:
    """One upload per watched device (not measured), so every path is warm; then drop it."""
    for device in layout.devices:
        server.upload(small_png(next(PNG_NUMBERS)), device, stamps())
    time.sleep(SETTLE_SECONDS)
    watcher.call("collect", True)


PNG_NUMBERS = itertools.count(1)


def latency(
    server: Server,
    watcher: WatcherProcess,
    layout: Layout,
    args: argparse.Namespace,
    stamps: Stamps,
) -> None:
    uploads = []  # (device, id, etag hex, time of the 201)
    udp = udp_counters()
    started = time.monotonic()
    for number in range(args.uploads):
        delay = started + number * args.interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        device = layout.devices[number % len(layout.devices)]
        meta, arrived = server.upload(small_png(next(PNG_NUMBERS)), device, stamps())
        uploads.append((device, meta["id"], meta["sha256"][:16], arrived))
    time.sleep(LINGER_SECONDS)
    found = watcher.call("collect", False)
    udp = {name: value - udp[name] for name, value in udp_counters().items()}

    watchers_of: dict[str, list[int]] = defaultdict(list)
    for index, device in enumerate(layout.watched):
        watchers_of[device or "*"].append(index)
    observers_of: dict[str, list[int]] = defaultdict(list)
    for index in layout.observing:
        observers_of[layout.observed[index]].append(index)

    for label, arrivals, key, expected_of in (
        ("event streams", found["sse"], 1, lambda d: watchers_of[d] + watchers_of["*"]),
        ("Observe", found["coap"], 2, lambda d: observers_of[d]),
    ):
        latencies, slowest = [], []
        expected = missing = duplicates = stray = 0
        for upload in uploads:
            device, arrived = upload[0], upload[3]
            wanted = set(expected_of(device))
            first: dict[int, float] = {}
            for index, moment in arrivals.get(upload[key], ()):
                if index not in wanted:
                    stray += 1
                elif index in first:
                    duplicates += 1
                else:
                    first[index] = moment
            expected += len(wanted)
            missing += len(wanted) - len(first)
            these = [moment - arrived for moment in first.values()]
            latencies.extend(these)
            if these:
                slowest.append(max(these))
        print(
            f"  {label:<14} {expected:6d} expected, {len(latencies):6d} delivered,"
            f" {missing} missing, {duplicates} duplicates, {stray} to others",
            flush=True,
        )
        print(f"  {'':<14} {summary(latencies)}")
        if slowest:
            print(f"  {'':<14} last delivery of each upload: {summary(slowest)}")
    others = {
        "streams ended by the server": found["ended"],
        "unmatched CoAP messages": found["coap_unmatched"],
    }
    others.update({f"CoAP socket {name}": count for name, count in found["coap_errors"].items()})
    # Any UDP datagram lost on this machine meanwhile (all of it is this bench's).
    others.update({f"kernel UDP {name}": udp[name] for name in ("RcvbufErrors", "SndbufErrors")})
    if any(others.values()):
        print("  " + ", ".join(f"{name}: {count}" for name, count in others.items() if count))


def rates(
    server: Server,
    watcher: WatcherProcess,
    layout: Layout,
    args: argparse.Namespace,
    tmp: Path,
    database_url: str,
) -> None:
    image = args.rate_image
    if image is None:
        image = tmp / "noise-32x32.png"
        image.write_bytes(noise_png(32))
    content_type = "image/jpeg" if image.suffix.lower() in (".jpg", ".jpeg") else "image/png"
    meta, _ = server.upload(
        image.read_bytes(), "rate-download", "2024-01-01T00:00:00Z", content_type
    )
    item = f"{server.url}{meta['href']}"
    every = [index for index, device in enumerate(layout.watched) if device is None]
    print(
        f"rates: wrk -t2 -c{args.connections}, {args.seconds} s each; uploads of"
        f" {image.name} ({image.stat().st_size:,} bytes) to unwatched devices (but each is"
        f" an event on the {len(every)} /events streams), downloads of it by id",
        flush=True,
    )
    print(
        "CPU s: each role's processes during the round (http: the WSGI workers; listener: the"
        " stream listener; watcher: this bench's clients); backlog: images waiting for the"
        " optimiser as the round starts",
        flush=True,
    )
    print(
        f"{'round':>5} {'open':>4} {'uploads/s':>9} {'p99 ms':>7} {'downloads/s':>11}"
        f" {'p99 ms':>7} {'errors':>6} {'/events deliveries':>18} {'backlog':>7}"
        f" {'CPU s:':>6} {'http':>5} {'listener':>8} {'coap':>5} {'optimiser':>9} {'watcher':>7}",
        flush=True,
    )
    # Not counted: the first run of each is slower, whatever is open.
    script = tmp / "upload-warm-up.lua"
    script.write_text(
        bench_http.INGEST_LUA.format(file=image, prefix="warm-up", content_type=content_type)
    )
    bench_http.wrk(server.url, min(3, args.seconds), args.connections, "-s", str(script))
    bench_http.wrk(item, min(3, args.seconds), args.connections)
    is_open = True
    results: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for number in range(args.rounds):
        want_open = number % 4 in (0, 3)
        if want_open != is_open:
            before = memory(server)
            if want_open:
                open_all(watcher, layout, args)
                after = memory(server)
                print_memory(before, after, len(layout.paths), len(layout.observing), "opened")
            else:
                close_all(watcher)
                print_memory(before, memory(server), 0, 0, "closed")
            is_open = want_open
        script = tmp / f"upload-{number}.lua"
        prefix = f"rate{number}"
        script.write_text(
            bench_http.INGEST_LUA.format(file=image, prefix=prefix, content_type=content_type)
        )
        [(backlog,)] = query_database(
            database_url, "SELECT COUNT(*) FROM images_image WHERE NOT optimized"
        )
        watcher_cpu = watcher.call("collect", False)["cpu"]
        cpu = cpu_seconds(server)
        up = bench_http.wrk(server.url, args.seconds, args.connections, "-s", str(script))
        down = bench_http.wrk(item, args.seconds, args.connections)
        time.sleep(0.5)
        used = {role: value - cpu.get(role, 0.0) for role, value in cpu_seconds(server).items()}
        found = watcher.call("collect", False)
        [(stored,)] = query_database(
            database_url,
            "SELECT COUNT(*) FROM images_image WHERE device_id LIKE ?",
            (f"{prefix}-%",),
        )
        delivered = sum(found["sse_counts"].get(index, 0) for index in every)
        deliveries = f"{delivered}/{stored * len(every)}" if is_open else "-"
        print(
            f"{number + 1:>5} {'yes' if is_open else 'no':>4} {up['rps']:>9.1f}"
            f" {up['p99']:>7.1f} {down['rps']:>11.1f} {down['p99']:>7.1f}"
            f" {up['errors'] + down['errors']:>6.0f} {deliveries:>18} {backlog:>7} {'':>6}"
            f" {used.get('http', 0):>5.1f} {used.get('events', 0):>8.1f}"
            f" {used.get('coap', 0):>5.1f} {used.get('optimiser', 0):>9.1f}"
            f" {found['cpu'] - watcher_cpu:>7.1f}",
            flush=True,
        )
        if found["ended"]:
            print(f"      {found['ended']} streams ended by the server during the round")
        results[is_open].append((up["rps"], down["rps"]))
    if is_open:
        close_all(watcher)
    if results[True] and results[False]:
        for name, average in (("mean", statistics.mean), ("median", statistics.median)):
            none, both = (
                [average(values) for values in zip(*results[state], strict=True)]
                for state in (False, True)
            )
            print(
                f"{name:>6}: none open: uploads {none[0]:.1f}/s, downloads {none[1]:.1f}/s;"
                f" {len(layout.paths)} streams + {len(layout.observing)} registrations open:"
                f" uploads {both[0]:.1f}/s, downloads {both[1]:.1f}/s;"
                f" open/none: uploads {both[0] / none[0]:.3f}, downloads {both[1] / none[1]:.3f}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, help=f"open event streams ({FULL['streams']})")
    parser.add_argument(
        "--observers", type=int, help=f"Observe registrations ({FULL['observers']})"
    )
    parser.add_argument("--uploads", type=int, help=f"uploads timed ({FULL['uploads']})")
    parser.add_argument("--seconds", type=int, help=f"each wrk run ({FULL['seconds']})")
    parser.add_argument("--rounds", type=int, help=f"rate rounds, open and not ({FULL['rounds']})")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between uploads")
    parser.add_argument("--devices", type=int, default=5, help="devices watched")
    parser.add_argument("--all-share", type=float, default=0.1, help="share of streams on /events")
    parser.add_argument("--per-socket", type=int, default=32, help="registrations per UDP socket")
    parser.add_argument("--non", action="store_true", help="non-confirmable registrations")
    parser.add_argument("--connections", type=int, default=4, help="wrk connections")
    parser.add_argument(
        "--rate-image",
        type=Path,
        help="PNG or JPEG for the rate rounds (default: a 32x32 noise PNG; a large one leaves"
        " the optimiser a backlog that competes for the CPU unevenly between rounds)",
    )
    parser.add_argument("--workers", type=int, default=2, help="serve's HTTP workers")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: " + " ".join(f"--{key} {value}" for key, value in QUICK.items()),
    )
    args = parser.parse_args()
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if shutil.which("wrk") is None:
        sys.exit("bench/live.py needs wrk: apt-get install wrk")
    # Every stream is a socket here and in the listener (serve inherits this).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, 4 * (args.streams + args.observers) + 1024))
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))

    tmp = Path(tempfile.mkdtemp(prefix="bench-live-"))
    with fresh_database(tmp) as database_url:
        run(args, tmp, database_url)


def run(args: argparse.Namespace, tmp: Path, database_url: str) -> None:
    kind = "PostgreSQL" if database_url.startswith("postgres") else "SQLite"
    layout = Layout.make(args.streams, args.observers, args.devices, args.all_share)
    every = sum(device is None for device in layout.watched)
    print(
        f"database {kind}; serve with {args.workers} HTTP workers; {os.cpu_count()} cores;"
        f" {args.streams} event streams ({every} on /events, the rest on {args.devices} devices);"
        f" {args.observers} Observe registrations of those devices, {args.per_socket} per UDP"
        f" socket, {'non-' if args.non else ''}confirmable",
        flush=True,
    )
    server = Server(database_url, tmp, args.workers, args.observers)
    watcher = None
    stamps = Stamps()
    try:
        # Every observed device needs an image, or its registration is a 4.04.
        for device in layout.devices:
            server.upload(small_png(next(PNG_NUMBERS)), device, stamps())
        watcher = WatcherProcess("127.0.0.1", server.events_port, server.coap_port)
        warm = Layout.make(WARM_UP, WARM_UP, args.devices, args.all_share)
        watcher.call("open", warm.paths, warm.observed, args.per_socket, not args.non)
        settle(server, watcher, warm, stamps)
        watcher.call("close")
        time.sleep(1.0)

        before = memory(server)
        open_all(watcher, layout, args)
        after = memory(server)
        print_memory(before, after, len(layout.paths), len(layout.observing), "opened")
        settle(server, watcher, layout, stamps)
        print(
            f"latency from the 201 to the delivery: {args.uploads} uploads of an 8x8 PNG,"
            f" {args.interval} s apart, round robin over {args.devices} devices",
            flush=True,
        )
        latency(server, watcher, layout, args, stamps)
        if args.rounds:
            rates(server, watcher, layout, args, tmp, database_url)
    finally:
        if watcher is not None:
            watcher.stop()
        server.stop()  # first: what it logs while stopping counts too
        problems = server.log_problems()
    if problems:
        print(f"serve log ({server.log_path}), errors and warnings:")
        for line, count in problems.most_common(12):
            print(f"  {count:6d} x {line[:160]}")
    else:
        print(f"serve log ({server.log_path}): no errors or warnings")


if __name__ == "__main__":
    main()
