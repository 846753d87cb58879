"""Event streams under ``serve`` (API.md §13): its stream listener, and across instances.

Real ``serve`` processes (granian WSGI for the API, which holds streams in
threads of their own, and granian ASGI for the stream listener), real
uploads over HTTP, streams read with httpx, which never follows a redirect
here: the documented URLs answer in place (API.md §15). Every channel an
operator can choose carries the events between instances: the database's
own (local sockets on SQLite, ``LISTEN``/``NOTIFY`` on PostgreSQL), and
Redis pub/sub.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from conftest import (
    ROOT,
    free_port,
    fresh_database_url,
    png_bytes,
    postgres_database_url,
    query_database,
    start_serve,
)
from images.live import channels

WAIT = 20.0  # seconds a test waits for an event before failing (no timing asserted)


@dataclass
class Instance:
    process: subprocess.Popen
    port: int
    events_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Stream:
    """A text/event-stream read by httpx in a thread: its events, then ``None`` at its end.

    Its comment lines (the preamble's, keep-alives) are queued apart. A
    redirect is not followed: its status is the stream's. A 200 stream has
    started once its first bytes came: the preamble, which the service sends
    once it hears the event channel (the headers may come before).
    """

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    events: queue.Queue = field(default_factory=queue.Queue)
    comments: queue.Queue = field(default_factory=queue.Queue)
    status: int | None = None
    response_headers: httpx.Headers | None = None
    opened: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Stream:
        threading.Thread(target=self._read, daemon=True).start()
        assert self.opened.wait(WAIT), f"{self.url} did not answer"
        return self

    def _read(self) -> None:
        try:
            with (
                httpx.Client(follow_redirects=False, timeout=httpx.Timeout(5, read=60)) as client,
                client.stream("GET", self.url, headers=self.headers) as response,
            ):
                self.status, self.response_headers = response.status_code, response.headers
                if self.status != 200:
                    self.opened.set()
                fields: dict[str, str] = {}
                for line in response.iter_lines():
                    if line == "":
                        # As browsers do: only a block with data is an event.
                        if "data" in fields:
                            self.events.put(fields)
                        fields = {}
                    elif line.startswith(":"):
                        self.comments.put(line)
                        self.opened.set()
                    elif line:
                        name, _, value = line.partition(":")
                        fields[name] = value.removeprefix(" ")
        except httpx.HTTPError as exc:
            self.events.put({"error": repr(exc)})
        finally:
            self.opened.set()
            self.events.put(None)

    def next(self) -> dict[str, str] | None:
        return self.events.get(timeout=WAIT)


def serve(
    tmp: Path, database_url: str, name: str, *, options: tuple[str, ...] = (), **env: str
) -> Instance:
    events_port = free_port()
    process, port = start_serve(
        tmp,
        {
            **os.environ,
            "DATABASE_URL": database_url,
            "SECRET_KEY": "test-only-secret",
            "ALLOWED_HOSTS": "127.0.0.1",
            "IMAGES_OPTIMIZE": "inline",
            **env,
        },
        workers=1,
        name=name,
        events_port=events_port,
        options=options,
    )
    return Instance(process, port, events_port)


def stop_all(*instances: Instance) -> None:
    for instance in instances:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(instance.process.pid, signal.SIGTERM)
    for instance in instances:
        try:
            instance.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(instance.process.pid, signal.SIGKILL)
            instance.process.wait()


def upload(instance: Instance, device: str, seed: int, **headers: str) -> dict:
    response = httpx.post(
        f"{instance.url}/collections/images",
        params={"deviceId": device, "timestamp": f"2026-12-05T06:00:{seed:02d}Z"},
        content=png_bytes(seed=seed),
        headers={"Content-Type": "image/png", **headers},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return response.json()


def manage(database_url: str, *command: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *command],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


@pytest.fixture(params=["database", "postgres", "redis"])
def pair(request, tmp_path) -> Iterator[tuple[Instance, Instance, str]]:
    """Two instances on one database, with each channel an operator may choose."""
    env = {}
    if request.param == "database":
        database_url = fresh_database_url(tmp_path)
    elif request.param == "postgres":
        database_url = postgres_database_url()
    else:
        database_url = fresh_database_url(tmp_path)
        env = {"IMAGES_EVENTS": "redis", "REDIS_URL": "redis://127.0.0.1:6379/0"}
    first = serve(tmp_path, database_url, "first", **env)
    second = serve(tmp_path, database_url, "second", **env)
    yield first, second, database_url
    stop_all(first, second)


def test_an_upload_to_either_instance_is_pushed_by_both(pair):
    first, second, _ = pair
    # Through the API's port: its WSGI workers hold them, in threads of their own.
    streams = [
        Stream(f"{instance.url}{path}").start()
        for instance in (first, second)
        for path in ("/events", "/devices/cam/events")
    ]
    for stream in streams:
        assert stream.status == 200
        assert stream.response_headers["content-type"] == "text/event-stream; charset=utf-8"
    for seed, target in enumerate([first, second, first]):
        stored = upload(target, "cam", seed)
        for stream in streams:
            event = stream.next()
            assert event == {"event": "image", "id": stored["id"], "data": event["data"]}
            assert json.loads(event["data"]) == stored


def test_a_burst_of_uploads_reaches_every_stream_whole_and_in_order(tmp_path):
    instance = serve(tmp_path, fresh_database_url(tmp_path), "serve")
    try:
        everything = Stream(f"{instance.url}/events").start()
        one = Stream(f"{instance.url}/devices/cam-2/events").start()
        stored: dict[int, list[str]] = {}

        def uploads(client: int) -> None:  # one camera, as fast as it is answered
            stored[client] = [upload(instance, f"cam-{client}", n)["id"] for n in range(15)]

        cameras = [threading.Thread(target=uploads, args=(client,)) for client in range(4)]
        for camera in cameras:
            camera.start()
        for camera in cameras:
            camera.join(60)
        received = [everything.next()["id"] for _ in range(60)]
        assert sorted(received) == sorted(i for ids in stored.values() for i in ids)
        for ids in stored.values():  # each camera's images in the order it sent them
            assert [i for i in received if i in ids] == ids
        assert [one.next()["id"] for _ in range(15)] == stored[2]
        assert everything.events.empty()
    finally:
        stop_all(instance)


def test_the_api_port_serves_a_stream_in_place_and_the_listener_only_streams(tmp_path):
    instance = serve(tmp_path, fresh_database_url(tmp_path), "serve")
    try:
        # (The device "a/b", as the API's routes read it.) No redirect: 200 here.
        in_place = Stream(f"{instance.url}/devices/a%2Fb/events?x=1").start()
        assert in_place.status == 200
        listener = f"http://127.0.0.1:{instance.events_port}"
        # The listener serves the two streams and nothing else, with the API's errors.
        missing = httpx.get(f"{listener}/collections/images")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/json"
        assert httpx.post(f"{listener}/events").status_code == 405
        assert httpx.get(f"{listener}/events", headers={"Accept": "image/png"}).status_code == 406
        assert httpx.get(f"{listener}/events", headers={"Host": "evil.example"}).status_code == 400
        head = httpx.head(f"{listener}/events")
        assert head.status_code == 200
        assert head.headers["cache-control"] == "no-store"
        # A page of the same host (the API's port) may read it, with its cookies; no other.
        same = Stream(f"{listener}/events", {"Origin": instance.url}).start()
        assert same.response_headers["access-control-allow-origin"] == instance.url
        assert same.response_headers["access-control-allow-credentials"] == "true"
        other = Stream(f"{listener}/events", {"Origin": "http://evil.example"}).start()
        assert "access-control-allow-origin" not in other.response_headers
        # Not any port or scheme of the same host name (API.md §15).
        for near in (f"http://127.0.0.1:{instance.events_port + 7}", "https://127.0.0.1"):
            stream = Stream(f"{listener}/events", {"Origin": near}).start()
            assert "access-control-allow-origin" not in stream.response_headers
        stored = upload(instance, "cam", 1)
        assert same.next()["id"] == other.next()["id"] == stored["id"]
        device_a_b = upload(instance, "a/b", 2)
        assert in_place.next()["id"] == device_a_b["id"]
    finally:
        stop_all(instance)


def test_replay_after_last_event_id_on_the_listener_then_keep_alives(tmp_path):
    instance = serve(tmp_path, fresh_database_url(tmp_path), "serve", IMAGES_EVENTS_KEEPALIVE="1")
    try:
        stored = [upload(instance, "cam", seed) for seed in range(3)]
        upload(instance, "other", 9)
        stream = Stream(
            f"{instance.url}/devices/cam/events", {"Last-Event-ID": stored[0]["id"]}
        ).start()
        assert [stream.next()["id"] for _ in range(2)] == [stored[1]["id"], stored[2]["id"]]
        newer = upload(instance, "cam", 5)
        assert stream.next()["id"] == newer["id"]
        # Quiet for a second: a comment keeps the connection (and its proxies) alive.
        comments = [stream.comments.get(timeout=WAIT) for _ in range(3)]
        assert comments == [": images events", ": keep-alive", ": keep-alive"]
    finally:
        stop_all(instance)


def test_token_mode_on_the_listener_and_revocation_ends_the_stream(tmp_path):
    database_url = fresh_database_url(tmp_path)
    instance = serve(tmp_path, database_url, "serve", IMAGES_AUTH="token")
    try:
        device = manage(database_url, "issuetoken", "--device", "cam").strip().split()[-1]
        other = manage(database_url, "issuetoken", "--device", "other").strip().split()[-1]
        listener = f"http://127.0.0.1:{instance.events_port}"
        assert httpx.get(f"{listener}/devices/cam/events").status_code == 401
        bearer = {"Authorization": f"Bearer {other}"}
        assert httpx.get(f"{listener}/devices/cam/events", headers=bearer).status_code == 403
        assert httpx.get(f"{listener}/events", headers=bearer).status_code == 403
        stream = Stream(
            f"{listener}/devices/cam/events", {"Authorization": f"Bearer {device}"}
        ).start()
        assert stream.status == 200
        stored = upload(instance, "cam", 1, Authorization=f"Bearer {device}")
        assert stream.next()["id"] == stored["id"]
        manage(database_url, "revoketoken", device)
        assert stream.next() is None  # the stream ended
    finally:
        stop_all(instance)


def test_postgres_losing_the_listen_connection_ends_streams_and_replay_fills_the_gap(tmp_path):
    database_url = postgres_database_url()
    instance = serve(tmp_path, database_url, "serve")
    try:
        first = upload(instance, "cam", 0)
        stream = Stream(f"{instance.url}/devices/cam/events").start()
        assert stream.status == 200
        # The listener's own connection is the one waiting in LISTEN.
        killed = query_database(
            database_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = ?",
            (channels.PG_APPLICATION_NAME,),
        )
        assert killed
        assert all(row[0] for row in killed)
        # Events may have been missed: the stream ends, so that the client reconnects.
        assert stream.next() is None
        missed = upload(instance, "cam", 1)
        again = Stream(f"{instance.url}/devices/cam/events", {"Last-Event-ID": first["id"]}).start()
        assert again.next()["id"] == missed["id"]
        newer = upload(instance, "cam", 2)
        assert again.next()["id"] == newer["id"]
    finally:
        stop_all(instance)


def test_idle_connections_keep_no_reader_out_and_are_closed(tmp_path):
    """API.md §15: 300 connections that send nothing keep no reader out; all are closed.

    A connection that sends nothing at all, or begins a request and never
    finishes it, is closed within 10 s, on the stream listener and on the
    API's port.
    """
    instance = serve(tmp_path, fresh_database_url(tmp_path), "serve")
    idle: list[socket.socket] = []
    try:
        for _ in range(300):
            connection = socket.create_connection(("127.0.0.1", instance.events_port), timeout=5)
            idle.append(connection)
        silent_api = socket.create_connection(("127.0.0.1", instance.port), timeout=5)
        idle.append(silent_api)
        stream = Stream(f"http://127.0.0.1:{instance.events_port}/events").start()
        assert stream.status == 200
        stored = upload(instance, "cam", 1)
        assert stream.next()["id"] == stored["id"]
        # A connection that began a request and never finished it is closed (within 10 s).
        idle[0].sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        idle[0].settimeout(30)
        assert idle[0].recv(1024) == b""
        for silent in (idle[1], silent_api):  # never sent a byte
            silent.settimeout(30)
            assert silent.recv(1024) == b""
    finally:
        for connection in idle:
            connection.close()
        stop_all(instance)
