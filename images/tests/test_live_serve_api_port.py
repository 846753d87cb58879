"""Event streams on ``serve``'s API port (API.md §13, §15): in place, for every client.

A client that sends ``Authorization: Bearer`` and follows no redirect (as
curl, fetch, python-requests and httpx do across ports) gets its stream on
the documented URLs, with the same checks as everywhere; the HTTP workers
send each stream from a thread of its own, at most ``--api-streams`` each,
and downloads and uploads go on beside them in the request thread; a client's streams count against
one cap whichever process holds them; SIGTERM ends the streams at once.
Real ``serve`` processes, streams read with httpx (no redirect followed).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time

import httpx

from conftest import fresh_database_url
from images.tests.test_live_serve import WAIT, Stream, manage, serve, stop_all, upload


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def token(database_url: str, *subject: str) -> str:
    return manage(database_url, "issuetoken", *subject).strip().split()[-1]


def test_a_reader_token_streams_on_the_api_port_without_a_redirect(tmp_path):
    database_url = fresh_database_url(tmp_path)
    instance = serve(tmp_path, database_url, "serve", IMAGES_AUTH="token")
    try:
        reader = token(database_url, "--reader", "dashboard")
        camera = token(database_url, "--device", "cam")
        other = token(database_url, "--device", "other")
        url = instance.url
        assert httpx.get(f"{url}/events").status_code == 401
        # A device token sees only its own device (API.md §15).
        assert httpx.get(f"{url}/devices/cam/events", headers=bearer(other)).status_code == 403
        assert httpx.get(f"{url}/events", headers=bearer(other)).status_code == 403
        wrong = {**bearer(reader), "Accept": "image/png"}
        assert httpx.get(f"{url}/events", headers=wrong).status_code == 406
        head = httpx.head(f"{url}/events", headers=bearer(reader))
        assert head.status_code == 200
        assert head.headers["cache-control"] == "no-store"

        everything = Stream(f"{url}/events", bearer(reader)).start()
        assert everything.status == 200
        assert everything.response_headers["content-type"] == "text/event-stream; charset=utf-8"
        assert everything.response_headers["x-accel-buffering"] == "no"
        own = Stream(f"{url}/devices/cam/events", bearer(camera)).start()
        assert own.status == 200
        stored = upload(instance, "cam", 1, **bearer(camera))
        assert everything.next()["id"] == own.next()["id"] == stored["id"]
        # A token revoked while its stream is open ends the stream.
        manage(database_url, "revoketoken", reader)
        assert everything.next() is None
        assert own.events.empty()
    finally:
        stop_all(instance)


class RawStream:
    """A stream on a plain socket, closed at will (httpx's reader cannot be closed mid-read)."""

    def __init__(self, port: int, path: str = "/events") -> None:
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.socket.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        self.head = self.socket.recv(4096).decode("latin-1")

    @property
    def status(self) -> int:
        return int(self.head.split()[1])

    def close(self) -> None:
        self.socket.close()


def test_a_worker_sends_streams_up_to_its_cap_and_downloads_go_on(tmp_path):
    """One worker, 2 streams at most; a client may hold 3 streams in all, across processes."""
    instance = serve(
        tmp_path,
        fresh_database_url(tmp_path),
        "serve",
        options=("--api-streams", "2", "--graceful-timeout", "60"),
        IMAGES_EVENTS_PER_CLIENT="3",
        IMAGES_EVENTS_KEEPALIVE="1",
    )
    streams: list[RawStream] = []
    try:
        stored = upload(instance, "cam", 1)
        streams += [RawStream(instance.port), RawStream(instance.port)]
        assert [stream.status for stream in streams] == [200, 200]
        # The worker sends as many streams as it may: 503, at once, not a wait.
        full = httpx.get(f"{instance.url}/events", timeout=10)
        assert full.status_code == 503
        assert full.headers["retry-after"]
        assert httpx.head(f"{instance.url}/events").status_code == 200  # a HEAD holds none
        # Downloads and uploads are served beside the open streams (one request thread).
        download = httpx.get(f"{instance.url}{stored['href']}", timeout=10)
        assert download.status_code == 200
        assert len(download.content) == stored["storedSize"]
        newer = upload(instance, "cam", 2)
        # The client's third stream, on the listener; a fourth is one too many,
        # wherever it is asked for: the processes count together.
        listener = f"http://127.0.0.1:{instance.events_port}"
        third = Stream(f"{listener}/events").start()
        assert third.status == 200
        assert _status(f"{listener}/events") == 429
        streams[0].close()
        # Its place is free once the server notices (at its next keep-alive).
        assert _opens(instance.port).status == 200
        assert _status(f"{listener}/events") == 429
        stored_last = upload(instance, "cam", 3)
        assert third.next()["id"] == stored_last["id"]
        assert newer["id"] != stored_last["id"]
    finally:
        for stream in streams:
            stream.close()
        stop_all(instance)


def _status(url: str) -> int:
    """The status of a GET that may open a stream (read no further: a 200 never ends)."""
    with httpx.stream("GET", url, timeout=10) as response:
        return response.status_code


def _opens(port: int) -> RawStream:
    """A stream on ``port`` as soon as one is let in (503 or 429 until then)."""
    deadline = time.monotonic() + WAIT
    while True:
        stream = RawStream(port)
        if stream.status == 200 or time.monotonic() > deadline:
            return stream
        stream.close()
        time.sleep(0.2)


def test_sigterm_ends_the_api_ports_streams_at_once(tmp_path):
    """The streams end cleanly, and serve exits long before its graceful timeout (60 s)."""
    instance = serve(
        tmp_path,
        fresh_database_url(tmp_path),
        "serve",
        options=("--graceful-timeout", "60"),
    )
    try:
        streams = [Stream(f"{instance.url}/events").start() for _ in range(3)]
        assert [stream.status for stream in streams] == [200, 200, 200]
        stored = upload(instance, "cam", 1)
        assert [stream.next()["id"] for stream in streams] == [stored["id"]] * 3
        began = time.monotonic()
        os.killpg(instance.process.pid, signal.SIGTERM)
        instance.process.wait(timeout=30)
        assert time.monotonic() - began < 15
        assert instance.process.returncode == 0
        # Ended, not broken: the chunked body was finished (httpx saw no error).
        assert [stream.next() for stream in streams] == [None, None, None]
    finally:
        with contextlib.suppress(ProcessLookupError):
            stop_all(instance)
