"""The one-box channel: Unix sequenced-packet sockets beside the SQLite database.

Written here because the standard library's sockets are the whole of it.
See :class:`LocalChannel`; the protocol is :mod:`images.live.channels`'.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import struct
import threading
import time
import uuid
from pathlib import Path

from images.live.channels.base import IDLE_CHECK_SECONDS, Listener

log = logging.getLogger(__name__)

# How long a local publisher waits for room in a listener's queue.
_SEND_TIMEOUT = 1.0
_STUCK_SECONDS = 30.0
# What a local listener reads as: you missed events (see LocalChannel._send).
_LOCAL_GAP = b"gap"


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
                if not selector.select(IDLE_CHECK_SECONDS):
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
