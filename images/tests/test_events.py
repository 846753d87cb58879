"""API.md §13 in one process: ``latest`` and the event streams, over Django's test client.

The events travel for real: published on commit to the channel of the
suite's database (local sockets on SQLite, ``NOTIFY`` on PostgreSQL),
received by this process's listener thread, and streamed. The streams are
the blocking ones the development server runs (``serve`` runs the same
stream on its event loop: see test_live_serve.py).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
from django.test import Client

from conftest import png_bytes
from images import live
from images.http import sse
from images.models import Token
from images.tokens import token_issue, token_revoke

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _events_heard_in_their_own_test():
    """After each test, time for the hub to read what it published (it reads at a pace).

    Otherwise an upload at a test's end could reach the next test's streams.
    """
    yield
    time.sleep(live.Hub.PACE_SECONDS * 4)


def upload(client: Client, device: str, timestamp: str, seed: int = 0, **headers) -> dict:
    response = client.post(
        f"/collections/images?deviceId={device}&timestamp={timestamp}",
        data=png_bytes(seed=seed),
        content_type="image/png",
        **headers,
    )
    assert response.status_code == 201, response.content
    return response.json()


class Stream:
    """An open event stream, read event by event (with a deadline, so a test cannot hang)."""

    def __init__(self, response) -> None:
        assert response.status_code == 200, getattr(response, "content", b"")
        assert response["Content-Type"].startswith("text/event-stream")
        self.response = response
        self._chunks: Iterator[bytes] = iter(response.streaming_content)
        self._pending: list[dict] = []
        self.preamble = self.next_chunk()

    def next_chunk(self, timeout: float = 5.0) -> bytes:
        found: list[bytes | BaseException] = []

        def read() -> None:
            try:
                found.append(next(self._chunks))
            except BaseException as exc:  # noqa: BLE001 - StopIteration included
                found.append(exc)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        assert found, f"nothing on the stream within {timeout} s"
        if isinstance(found[0], BaseException):
            raise found[0]
        return found[0]

    def next_event(self) -> dict:
        """The next ``image`` event (keep-alive comments skipped; a chunk may hold several)."""
        while not self._pending:
            self._pending.extend(
                parse_event(block)
                for block in self.next_chunk().split(b"\n\n")
                if block.strip() and not block.startswith(b":")
            )
        return self._pending.pop(0)

    def close(self) -> None:
        self.response.close()


def parse_event(chunk: bytes) -> dict:
    fields = dict(line.split(": ", 1) for line in chunk.decode().strip().split("\n"))
    assert set(fields) == {"event", "id", "data"}, chunk
    return {"event": fields["event"], "id": fields["id"], "data": json.loads(fields["data"])}


def open_stream(client: Client, path: str, **headers) -> Stream:
    return Stream(client.get(path, HTTP_ACCEPT="text/event-stream", **headers))


def test_a_device_stream_carries_that_devices_images_with_their_metadata(client):
    stream = open_stream(client, "/devices/cam%2F1/events")
    try:
        assert stream.preamble.startswith(b"retry: ")
        upload(client, "other", "2024-01-01T00:00:00Z", seed=1)
        stored = upload(client, "cam/1", "2024-01-01T00:00:00Z", seed=2)
        event = stream.next_event()
        assert event["event"] == "image"
        assert event["id"] == stored["id"]
        # The data is exactly the image's metadata, as GET by id answers it.
        assert event["data"] == client.get(stored["href"], HTTP_ACCEPT="application/json").json()
    finally:
        stream.close()


def test_the_all_devices_stream_carries_every_device_in_order(client):
    stream = open_stream(client, "/events")
    try:
        ids = [upload(client, f"dev-{n}", "2024-01-01T00:00:00Z", seed=n)["id"] for n in range(3)]
        assert [stream.next_event()["id"] for _ in ids] == ids
    finally:
        stream.close()


def test_idle_streams_get_keep_alive_comments(client, settings):
    settings.IMAGES_EVENTS_KEEPALIVE = 1
    stream = open_stream(client, "/events")
    try:
        assert stream.next_chunk(timeout=3) == sse.KEEPALIVE
    finally:
        stream.close()


def test_last_event_id_replays_what_came_after_then_continues_live(client):
    first, second, third = (
        upload(client, "cam", f"2024-01-0{n}T00:00:00Z", seed=n)["id"] for n in (1, 2, 3)
    )
    upload(client, "elsewhere", "2024-01-01T00:00:00Z", seed=9)
    stream = open_stream(client, "/devices/cam/events", HTTP_LAST_EVENT_ID=first)
    try:
        assert [stream.next_event()["id"] for _ in range(2)] == [second, third]
        fourth = upload(client, "cam", "2024-01-04T00:00:00Z", seed=4)["id"]
        assert stream.next_event()["id"] == fourth
    finally:
        stream.close()


def test_a_long_replay_stops_at_its_limit_and_the_client_resumes(client, monkeypatch):
    monkeypatch.setattr(live.watch, "REPLAY_LIMIT", 2)
    ids = [upload(client, "cam", f"2024-01-0{n}T00:00:00Z", seed=n)["id"] for n in range(1, 6)]
    stream = open_stream(client, "/devices/cam/events", HTTP_LAST_EVENT_ID=ids[0])
    assert [stream.next_event()["id"] for _ in range(2)] == ids[1:3]
    with pytest.raises(StopIteration):
        stream.next_chunk()
    # As a browser would: reconnect with the last id received.
    stream = open_stream(client, "/devices/cam/events", HTTP_LAST_EVENT_ID=ids[2])
    try:
        assert [stream.next_event()["id"] for _ in range(2)] == ids[3:5]
    finally:
        stream.close()


def test_an_unknown_last_event_id_starts_live_without_replay(client, settings):
    settings.IMAGES_EVENTS_KEEPALIVE = 1
    # Stored, and its event heard, before the stream below opens: a stream
    # opened while that event was still on its way could get it, live.
    # (So could this one an earlier test's event: it waits for its own.)
    first = open_stream(client, "/devices/cam/events")
    try:
        stored = upload(client, "cam", "2024-01-01T00:00:00Z")
        while first.next_event()["id"] != stored["id"]:
            pass
    finally:
        first.close()
    stream = open_stream(
        client, "/devices/cam/events", HTTP_LAST_EVENT_ID="00000000-0000-0000-0000-000000000000"
    )
    try:
        assert stream.next_chunk(timeout=10) == sse.KEEPALIVE
    finally:
        stream.close()


def test_events_refuse_other_formats_and_methods(client):
    response = client.get("/events", HTTP_ACCEPT="image/png")
    assert response.status_code == 406
    assert response.json()["errors"]
    response = client.post("/devices/cam/events")
    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"


def test_latest_is_the_newest_by_timestamp_and_always_revalidated(client):
    assert client.get("/devices/cam/images/latest").status_code == 404
    newest = upload(client, "cam", "2024-05-01T00:00:00Z", seed=1)
    upload(client, "cam", "2024-04-01T00:00:00Z", seed=2)  # older, stored later
    response = client.get("/devices/cam/images/latest")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["Cache-Control"] == "public, no-cache"
    assert response["Content-Location"] == newest["href"]
    assert response.content == client.get(newest["href"]).content
    assert response["ETag"] == f'"{newest["sha256"]}"'
    again = client.get("/devices/cam/images/latest", HTTP_IF_NONE_MATCH=response["ETag"])
    assert again.status_code == 304
    assert again["Cache-Control"] == "public, no-cache"
    metadata = client.get("/devices/cam/images/latest", HTTP_ACCEPT="application/json")
    assert metadata.json() == newest
    head = client.head("/devices/cam/images/latest")
    assert head.status_code == 200
    assert head.content == b""
    assert head["Content-Length"] == response["Content-Length"]
    assert client.delete("/devices/cam/images/latest").status_code == 405


# --- Token mode ----------------------------------------------------------------


@pytest.fixture
def token_mode(settings):
    settings.IMAGES_AUTH = "token"
    settings.IMAGES_RATE_DEVICE = settings.IMAGES_RATE_CLIENT = ""


def bearer(kind: str, subject: str) -> tuple[Token, dict]:
    token, raw = token_issue(kind=kind, subject=subject)
    return token, {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def test_token_mode_events_and_latest_need_a_reader_or_the_devices_own(client, token_mode):
    _, camera = bearer(Token.Kind.DEVICE, "cam")
    _, other = bearer(Token.Kind.DEVICE, "other")
    _, reader = bearer(Token.Kind.READER, "dashboard")
    upload(client, "cam", "2024-01-01T00:00:00Z", **camera)
    for path in ("/devices/cam/images/latest", "/devices/cam/events", "/events"):
        response = client.get(path, HTTP_ACCEPT="*/*")
        assert response.status_code == 401, path
        assert response["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/devices/cam/images/latest", **other).status_code == 403
    assert client.get("/devices/cam/events", **other).status_code == 403
    assert client.get("/events", **camera).status_code == 403  # every device: readers only
    latest = client.get("/devices/cam/images/latest", **camera)
    assert latest.status_code == 200
    assert latest["Cache-Control"] == "private, no-cache"
    assert client.get("/devices/cam/images/latest", **reader).status_code == 200
    for headers in (camera, reader):
        open_stream(client, "/devices/cam/events", **headers).close()
    open_stream(client, "/events", **reader).close()


def test_revoking_a_token_ends_the_streams_it_opened(client, token_mode):
    token, reader = bearer(Token.Kind.READER, "dashboard")
    _, kept = bearer(Token.Kind.READER, "wallboard")
    _, camera = bearer(Token.Kind.DEVICE, "cam")
    revoked_stream = open_stream(client, "/events", **reader)
    kept_stream = open_stream(client, "/events", **kept)
    try:
        assert token_revoke(raw_or_id=str(token.pk)) == 1
        with pytest.raises(StopIteration):
            revoked_stream.next_chunk()
        stored = upload(client, "cam", "2024-01-01T00:00:00Z", **camera)
        assert kept_stream.next_event()["id"] == stored["id"]
        assert client.get("/events", HTTP_ACCEPT="*/*", **reader).status_code == 401
    finally:
        kept_stream.close()


def test_a_client_holds_at_most_its_share_of_open_streams(client, settings):
    """API.md §15: past IMAGES_EVENTS_PER_CLIENT open streams, 429 with Retry-After."""
    settings.IMAGES_EVENTS_PER_CLIENT = 2
    first = open_stream(client, "/events")
    second = open_stream(client, "/devices/cam/events")
    try:
        refused = client.get("/events", HTTP_ACCEPT="text/event-stream")
        assert refused.status_code == 429
        assert int(refused["Retry-After"]) > 0
        assert client.head("/events").status_code == 429  # a HEAD counts the same
    finally:
        first.close()
    third = open_stream(client, "/events")  # one closed: room for one more
    third.close()
    second.close()
    assert client.head("/events").status_code == 200
    assert client.head("/events").status_code == 200  # a HEAD holds nothing


def test_behind_a_proxy_each_client_has_its_own_share(client, settings):
    """The cap counts the client the trusted proxy reports (NUM_PROXIES), not the proxy."""
    settings.IMAGES_EVENTS_PER_CLIENT = 1
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    proxy = {"REMOTE_ADDR": "10.0.0.1"}
    first = open_stream(client, "/events", HTTP_X_FORWARDED_FOR="192.0.2.1", **proxy)
    second = open_stream(client, "/events", HTTP_X_FORWARDED_FOR="192.0.2.2", **proxy)
    try:
        again = client.get(
            "/events", HTTP_ACCEPT="text/event-stream", HTTP_X_FORWARDED_FOR="192.0.2.1", **proxy
        )
        assert again.status_code == 429
    finally:
        first.close()
        second.close()
