"""The far side of ``bench/deliveries.py``: webhook receivers and a subscriber.

(The broker is :class:`ops.mosquitto.Mosquitto`, as in the tests.)

- :class:`ReceiversProcess`: a forked process (in the idle scheduling class:
  what it stands for runs on other machines; its CPU is printed) holding ``live`` webhook
  receivers, each an HTTP server on a port of its own that answers every
  ``POST`` 204 and stamps the first arrival of each image id with
  ``time.time()``, and an MQTT subscriber to ``<prefix>/#`` (QoS 1) stamping
  each ``<prefix>/<device>/image`` message the same way. A receiver can be
  taken down (its listener closed and its open connections cut) and brought
  back on the same port. Driven over a pipe.

Written for the bench rather than imported from the tests (bench/support.py
says why).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import threading
import time
import uuid
from multiprocessing.connection import Connection
from typing import Any

import httptools


class Loop:
    """One asyncio event loop in a thread of its own, which every webhook receiver shares."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)


class Receiver:
    """One webhook receiver on ``port`` (0: a free one, kept across down and up).

    Its HTTP is an asyncio protocol over httptools' parser (as the
    deliverer's), not http.server: it stands for a machine elsewhere, so the
    less of this box's CPU it takes the truer the bench. Measured (the
    receivers' process's CPU per POST, kept alive, 9 receivers at once,
    18,000 POSTs): 17 us over asyncio's streams, 11 us here (a
    ``ThreadingHTTPServer`` thread per connection cost 150 us under the old
    deliverer). Every POST is answered 204.
    """

    def __init__(self, loop: Loop, port: int = 0) -> None:
        self.shared = loop
        self.arrivals: dict[str, float] = {}
        self.posts = 0
        self.lock = threading.Lock()
        self.transports: set[asyncio.Transport] = set()
        self.server: asyncio.Server | None = None
        self.port = port
        self.up()

    def up(self) -> None:
        self.server = self.shared.run(
            self.shared.loop.create_server(
                lambda: _Connection(self), "127.0.0.1", self.port, reuse_address=True
            )
        )
        self.port = self.server.sockets[0].getsockname()[1]

    def arrived(self, body: bytes) -> None:
        now = time.time()
        image_id = json.loads(body).get("id", "")
        with self.lock:
            self.posts += 1
            self.arrivals.setdefault(image_id, now)

    def down(self) -> None:
        """Stop listening, and cut the connections kept alive (the deliverer's)."""
        server, self.server = self.server, None
        if server is None:
            return

        async def close() -> None:
            server.close()
            for transport in list(self.transports):
                transport.abort()
            await server.wait_closed()

        self.shared.run(close())

    def take(self) -> tuple[dict[str, float], int]:
        with self.lock:
            taken = (self.arrivals, self.posts)
            self.arrivals, self.posts = {}, 0
        return taken

    def count(self) -> int:
        with self.lock:
            return len(self.arrivals)


class _Connection(asyncio.Protocol):
    """One kept-alive connection to a :class:`Receiver`: requests parsed, each answered 204."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.parser = httptools.HttpRequestParser(self)
        self.body: list[bytes] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.receiver.transports.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.receiver.transports.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body, self.body = b"".join(self.body), []
        self.receiver.arrived(body)
        if self.transport is not None:
            self.transport.write(b"HTTP/1.1 204 No Content\r\n\r\n")


class Subscriber:
    """``<prefix>/#`` at QoS 1; the first arrival of each image id on an ``/image`` topic."""

    def __init__(self, port: int, prefix: str) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.arrivals: dict[str, float] = {}
        self.messages = 0
        self.lock = threading.Lock()
        subscribed = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"bench-{uuid.uuid4().hex[:8]}"
        )
        self.client.on_connect = lambda client, *_: client.subscribe(f"{prefix}/#", qos=1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise RuntimeError("the broker did not take the subscription")

    def _message(self, client: Any, userdata: object, message: Any) -> None:
        now = time.time()
        if not message.topic.endswith("/image"):
            return
        image_id = json.loads(message.payload).get("id", "")
        with self.lock:
            self.messages += 1
            self.arrivals.setdefault(image_id, now)

    def take(self) -> tuple[dict[str, float], int]:
        with self.lock:
            taken = (self.arrivals, self.messages)
            self.arrivals, self.messages = {}, 0
        return taken

    def count(self) -> int:
        with self.lock:
            return len(self.arrivals)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Receivers:
    """The child's state: what each command of the pipe does."""

    def __init__(self, live: int, mqtt_port: int, prefix: str) -> None:
        loop = Loop()
        self.hooks = [Receiver(loop) for _ in range(live)]
        self.subscriber = Subscriber(mqtt_port, prefix)

    def ports(self) -> list[int]:
        return [hook.port for hook in self.hooks]

    def counts(self) -> tuple[list[int], int]:
        """Distinct images each receiver has, and the subscriber."""
        return [hook.count() for hook in self.hooks], self.subscriber.count()

    def take(self) -> dict[str, Any]:
        """Every arrival since the last take (then forgotten): per receiver, and MQTT's."""
        hooks = [hook.take() for hook in self.hooks]
        mqtt = self.subscriber.take()
        return {"hooks": [h[0] for h in hooks], "posts": [h[1] for h in hooks], "mqtt": mqtt}

    def down(self, index: int) -> None:
        self.hooks[index].down()

    def up(self, index: int) -> None:
        self.hooks[index].up()

    def close(self) -> None:
        for hook in self.hooks:
            hook.down()
        self.subscriber.close()


def receivers_main(conn: Connection, live: int, mqtt_port: int, prefix: str) -> None:
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    receivers = Receivers(live, mqtt_port, prefix)
    conn.send(receivers.ports())
    while True:
        name, *arguments = conn.recv()
        if name == "quit":
            receivers.close()
            conn.send("bye")
            return
        conn.send(getattr(receivers, name)(*arguments))


class ReceiversProcess:
    """:class:`Receivers` in a forked process: fork it before this process starts threads."""

    def __init__(self, live: int, mqtt_port: int, prefix: str) -> None:
        context = multiprocessing.get_context("fork")
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=receivers_main, args=(child, live, mqtt_port, prefix), daemon=True
        )
        self.process.start()
        self.ports: list[int] = self._answer("start", 30)

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def call(self, name: str, *arguments: Any, timeout: float = 60) -> Any:
        self.conn.send((name, *arguments))
        return self._answer(name, timeout)

    def _answer(self, name: str, timeout: float) -> Any:
        if not self.conn.poll(timeout):
            raise RuntimeError(f"the receivers did not answer {name!r} within {timeout} s")
        return self.conn.recv()

    def stop(self) -> None:
        if self.process.is_alive():
            with contextlib.suppress(OSError, EOFError, RuntimeError):
                self.call("quit", timeout=30)
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
