"""The channels events travel on between processes and instances (API.md §13).

``IMAGES_EVENTS`` picks one (``auto``, the default: PostgreSQL's channel on
PostgreSQL, local sockets on SQLite):

- :class:`PostgresChannel`: ``NOTIFY`` and ``LISTEN``. Every instance on
  one PostgreSQL hears every other; no service beside the database.
- :class:`LocalChannel`: one box (the SQLite default). Each listening
  process binds a Unix socket in a directory named after the database
  file; a publisher connects to every socket there and sends each event as
  one packet. The kernel wakes the listener at once: nothing polls the
  table. Written here because the standard library's sockets are the whole
  of it.
- :class:`RedisChannel`: Redis pub/sub (``REDIS_URL``), for deployments
  that already run Redis beside several instances.

Each has ``publish(payload)`` and ``listen(listener)``, which runs in the
hub's thread while anyone watches: it calls ``listener.listening()`` once
it hears the channel, ``listener.pace()`` when something waits to be read
(which may sleep a moment, so that a burst is read and delivered at
once), ``listener.deliver(payloads)`` for what arrives,
``listener.gap()`` after the channel was lost and found again (events may
have been missed meanwhile), and returns once ``listener.idle()``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import selectors
import socket
import struct
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections

log = logging.getLogger(__name__)

PG_CHANNEL = "images_events"
# How often a listener checks that its channel is alive, and whether anyone still watches.
_HEARTBEAT_SECONDS = 10.0
_IDLE_CHECK_SECONDS = 1.0
_RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)
# How long a local publisher waits for room in a listener's queue.
_SEND_TIMEOUT = 1.0
_STUCK_SECONDS = 30.0
# What a local listener reads as: you missed events (see LocalChannel._send).
_LOCAL_GAP = b"gap"
# The most events one read hands over (the rest follow at once).
_BATCH_LIMIT = 10_000


class Listener(Protocol):
    def listening(self) -> None: ...

    def pace(self) -> None: ...

    def deliver(self, payloads: list[bytes]) -> None: ...

    def gap(self) -> None: ...

    def idle(self) -> bool: ...


class Channel(Protocol):
    def publish(self, payload: bytes) -> None: ...

    def listen(self, listener: Listener) -> None: ...


def _retrying(connect_and_listen: Callable[[], None], listener: Listener, name: str) -> None:
    """Run ``connect_and_listen`` until idle; after a failure, reconnect (with backoff)."""
    failures = 0
    while not listener.idle():
        started = time.monotonic()
        try:
            connect_and_listen()
        except Exception as exc:  # noqa: BLE001 - any failure means: reconnect
            if time.monotonic() - started > 60:
                failures = 0  # it had been working: start the backoff again
            pause = _RETRY_SECONDS[min(failures, len(_RETRY_SECONDS) - 1)]
            if failures == 0:
                log.warning("lost the %s event channel (%s); reconnecting", name, exc)
            failures += 1
            time.sleep(pause)


PG_APPLICATION_NAME = "images-events"


def _gather(first: list, more: Callable[[], list]) -> list:
    """``first``, then what ``more()`` finds came meanwhile, until it finds nothing (or plenty)."""
    batch = list(first)
    while len(batch) < _BATCH_LIMIT and (found := more()):
        batch += found
    return batch


class PostgresChannel:
    """``NOTIFY images_events`` / ``LISTEN images_events`` on the service's own database."""

    def __init__(self, alias: str = DEFAULT_DB_ALIAS) -> None:
        self._alias = alias

    def publish(self, payload: bytes) -> None:
        # On the request's own connection: one short statement after commit.
        with connections[self._alias].cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [PG_CHANNEL, payload.decode()])

    def listen(self, listener: Listener) -> None:
        import psycopg

        params = connections[self._alias].settings_dict
        conninfo = {
            "dbname": params["NAME"],
            "user": params.get("USER") or None,
            "password": params.get("PASSWORD") or None,
            "host": params.get("HOST") or None,
            "port": params.get("PORT") or None,
        }
        first = True

        def connect_and_listen() -> None:
            nonlocal first
            with psycopg.connect(
                **{k: v for k, v in conninfo.items() if v},
                autocommit=True,
                connect_timeout=5,
                # Named, for an operator's pg_stat_activity.
                application_name=PG_APPLICATION_NAME,
            ) as connection:
                connection.execute(f"LISTEN {PG_CHANNEL}")
                listener.listening()
                if not first:
                    listener.gap()
                first = False
                checked = time.monotonic()
                while not listener.idle():
                    # The first notification as it comes (for up to a second),
                    # then all that came meanwhile (timeout 0: one poll).
                    first = list(connection.notifies(timeout=_IDLE_CHECK_SECONDS, stop_after=1))
                    if first:
                        listener.pace()
                        batch = _gather(first, lambda: list(connection.notifies(timeout=0)))
                        listener.deliver([notification.payload.encode() for notification in batch])
                    if time.monotonic() - checked > _HEARTBEAT_SECONDS:
                        connection.execute("SELECT 1")  # still there?
                        checked = time.monotonic()

        _retrying(connect_and_listen, listener, "PostgreSQL")


class LocalChannel:
    """Unix sequenced-packet sockets in a directory of this database's (one box).

    Each listening process binds one there; each publishing process connects
    to each once and sends every event as one packet. Connected, not
    datagrams: an unconnected datagram socket's queue holds only
    ``net.unix.max_dgram_qlen`` packets (10 by default), which a burst of
    uploads fills while the listener's process is busy; a connection holds
    what fits its send buffer (hundreds of events).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._connections: dict[str, socket.socket] = {}
        # Listeners found not reading: socket name -> until when not to wait for them.
        self._stuck: dict[str, float] = {}
        # Listeners that missed an event: each gets a gap marker before its next one.
        self._dropped: set[str] = set()

    def publish(self, payload: bytes) -> None:
        try:
            names = set(os.listdir(self.directory))
        except FileNotFoundError:
            names = set()
        with self._lock:
            for name in set(self._connections) - names:
                self._forget(name)  # its listener ended
            now = time.monotonic()
            for name in names:
                self._send(name, payload, now)

    def _connect(self, name: str) -> socket.socket | None:
        connection = self._connections.get(name)
        if connection is not None:
            return connection
        path = self.directory / name
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # A full buffer makes a send wait for room, up to _SEND_TIMEOUT; then
        # the event is dropped for that listener only. The kernel does the
        # waiting (SO_SNDTIMEO on a blocking socket): Python's own socket
        # timeout would poll in a loop.
        seconds = int(_SEND_TIMEOUT)
        micros = int((_SEND_TIMEOUT - seconds) * 1_000_000)
        connection.setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", seconds, micros)
        )
        try:
            connection.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            connection.close()
            path.unlink(missing_ok=True)  # its process is gone
            return None
        except OSError as exc:
            connection.close()
            log.warning("could not reach the event listener %s: %s", name, exc)
            return None
        self._connections[name] = connection
        return connection

    def _forget(self, name: str) -> None:
        connection = self._connections.pop(name, None)
        if connection is not None:
            connection.close()
        self._stuck.pop(name, None)
        self._dropped.discard(name)

    def _send(self, name: str, payload: bytes, now: float) -> None:
        connection = self._connect(name)
        if connection is None:
            return
        # One that did not read for _SEND_TIMEOUT is not waited for again for
        # a while: a hung process must not hold up every upload.
        stuck = self._stuck.get(name, 0.0) > now
        flags = socket.MSG_DONTWAIT if stuck else 0
        try:
            if name in self._dropped:
                # It missed events: it tells its watchers to catch up from the database.
                connection.send(_LOCAL_GAP, flags)
                self._dropped.discard(name)
            connection.send(payload, flags)
            self._stuck.pop(name, None)
        except BlockingIOError:
            if not stuck:
                log.warning(
                    "an event listener (%s) did not read for %.1f s: events dropped for it"
                    " (its watchers catch up from the database once it reads again)",
                    name,
                    _SEND_TIMEOUT,
                )
            self._stuck[name] = now + _STUCK_SECONDS
            self._dropped.add(name)
        except OSError:
            self._forget(name)  # it went away (its socket file goes with it)

    def listen(self, listener: Listener) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.directory / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        server.bind(str(path))
        server.listen(128)
        server.setblocking(False)
        selector = selectors.DefaultSelector()
        selector.register(server, selectors.EVENT_READ)
        listener.listening()
        try:
            while not listener.idle():
                if not selector.select(_IDLE_CHECK_SECONDS):
                    continue
                listener.pace()
                batch: list[bytes] = []
                for key, _ in selector.select(0):
                    if key.fileobj is server:
                        _accept(server, selector)
                    else:
                        _receive(key.fileobj, selector, batch)  # type: ignore[arg-type]
                while _LOCAL_GAP in batch:
                    at = batch.index(_LOCAL_GAP)
                    if at:
                        listener.deliver(batch[:at])
                    listener.gap()
                    batch = batch[at + 1 :]
                if batch:
                    listener.deliver(batch)
        finally:
            path.unlink(missing_ok=True)
            for key in list(selector.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr]
            selector.close()


def _accept(server: socket.socket, selector: selectors.BaseSelector) -> None:
    try:
        while True:
            connection, _ = server.accept()
            connection.setblocking(False)
            selector.register(connection, selectors.EVENT_READ)
    except BlockingIOError:
        pass


def _receive(
    connection: socket.socket, selector: selectors.BaseSelector, batch: list[bytes]
) -> None:
    """What one publisher sent (one event per packet); at its end, forget it."""
    try:
        for _ in range(256):
            packet = connection.recv(65536)
            if not packet:
                break  # the publisher closed its end
            batch.append(packet)
        else:
            return  # more may wait: the next select says so
    except BlockingIOError:
        return
    except OSError:
        pass
    selector.unregister(connection)
    connection.close()


class RedisChannel:
    """Redis pub/sub on ``REDIS_URL``."""

    def __init__(self, url: str) -> None:
        import redis

        self._client = redis.Redis.from_url(url, socket_connect_timeout=5)
        self._url = url

    def publish(self, payload: bytes) -> None:
        self._client.publish(PG_CHANNEL, payload)

    def listen(self, listener: Listener) -> None:
        import redis

        first = True

        def connect_and_listen() -> None:
            nonlocal first
            client = redis.Redis.from_url(
                self._url, socket_connect_timeout=5, health_check_interval=_HEARTBEAT_SECONDS
            )
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(PG_CHANNEL)
                pubsub.ping()
                listener.listening()
                if not first:
                    listener.gap()
                first = False
                while not listener.idle():
                    message = pubsub.get_message(timeout=_IDLE_CHECK_SECONDS)
                    if message is None:
                        continue
                    listener.pace()
                    batch = _gather([message], lambda: _waiting(pubsub))
                    payloads = [each["data"] for each in batch if each["type"] == "message"]
                    if payloads:
                        listener.deliver(payloads)
            finally:
                pubsub.close()
                client.close()

        _retrying(connect_and_listen, listener, "Redis")


def _waiting(pubsub: Any) -> list:
    """The next Redis message already received, if any (timeout 0: no wait)."""
    message = pubsub.get_message(timeout=0.0)
    return [] if message is None else [message]


def kind() -> str:
    """The channel ``IMAGES_EVENTS`` names (``auto`` resolved)."""
    chosen = settings.IMAGES_EVENTS
    if chosen != "auto":
        return chosen
    return "postgres" if connections[DEFAULT_DB_ALIAS].vendor == "postgresql" else "local"


def local_directory() -> Path:
    """The sockets' directory: one per database file, short enough for a socket path."""
    name = str(connections[DEFAULT_DB_ALIAS].settings_dict["NAME"])
    key = hashlib.sha256(os.path.abspath(name).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"images-events-{os.getuid()}-{key}"


_channels: dict[tuple[str, str], Channel] = {}
_channels_lock = threading.Lock()


def current() -> Channel:
    """This process's channel, as configured now."""
    chosen = kind()
    where = {
        "postgres": lambda: str(connections[DEFAULT_DB_ALIAS].settings_dict["NAME"]),
        "local": lambda: str(local_directory()),
        "redis": lambda: settings.REDIS_URL,
    }
    if chosen not in where:
        raise ValueError(f"IMAGES_EVENTS={chosen!r}: use auto, postgres, local or redis")
    key = (chosen, where[chosen]())
    with _channels_lock:
        channel = _channels.get(key)
        if channel is None:
            if chosen == "postgres":
                channel = PostgresChannel()
            elif chosen == "local":
                channel = LocalChannel(Path(key[1]))
            else:
                channel = RedisChannel(key[1])
            _channels[key] = channel
        return channel
