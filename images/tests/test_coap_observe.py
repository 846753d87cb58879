"""API.md §13 over CoAP: ``latest`` observed (RFC 7641) by real clients.

A live ``runcoap`` and a live ``runserver`` on one database: images
uploaded over HTTP are notified over CoAP (the event crosses processes on
the suite's channel). Clients: aiocoap's, libcoap's ``coap-client -s``,
and a bare UDP socket where the test must answer a notification itself
(RST, or nothing at all).
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from aiocoap import GET, Context, Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type

from conftest import LiveServer, png_bytes, start_runserver, stop
from formats.linkformat import parse
from images.tests.conftest_coap import LiveCoap, noise_png, start_runcoap

JSON = 50


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveCoap, LiveServer]]:
    tmp = tmp_path_factory.mktemp("observe")
    coap = start_runcoap(tmp, {"IMAGES_OBSERVE_PER_PEER": "3"})
    http = start_runserver(tmp, database_url=coap.database_url)
    yield coap, http
    stop(http.process)
    coap.stop()


def http_upload(http: LiveServer, device: str, timestamp: str, image: bytes) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{http.port}/collections/images?"
        + urlencode({"deviceId": device, "timestamp": timestamp}),
        data=image,
        headers={"Content-Type": "image/png"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 201
        return json.loads(response.read())


def http_get(http: LiveServer, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{http.port}{path}", timeout=30) as response:
        return response.read()


def test_a_registration_gets_the_latest_then_each_newer_image(servers):
    coap, http = servers
    first = http_upload(http, "cam-a", "2024-01-01T00:00:00Z", png_bytes(seed=1))
    large = noise_png(300)  # several blocks: the notification comes block-wise

    async def observe() -> list[Message]:
        context = await Context.create_client_context()
        try:
            request = Message(code=GET, uri=f"{coap.uri}/devices/cam-a/images/latest", observe=0)
            pending = context.request(request)
            answers = [await pending.response]
            # Older than the latest: not a change of "latest", no notification.
            await asyncio.to_thread(
                http_upload, http, "cam-a", "2023-01-01T00:00:00Z", png_bytes(seed=2)
            )
            newer = await asyncio.to_thread(
                http_upload, http, "cam-a", "2024-02-01T00:00:00Z", large
            )
            started = time.monotonic()
            async for notification in pending.observation:
                answers.append(notification)
                break
            answers.append(time.monotonic() - started)
            answers.append(newer)
            return answers
        finally:
            await context.shutdown()

    registration, notification, seconds, newer = asyncio.run(asyncio.wait_for(observe(), 30))
    assert registration.code == Code.CONTENT
    assert registration.opt.observe is not None
    assert registration.payload == http_get(http, first["href"])
    assert registration.opt.etag == bytes.fromhex(first["sha256"][:16])
    assert notification.code == Code.CONTENT
    assert notification.opt.observe > registration.opt.observe
    assert notification.opt.etag == bytes.fromhex(newer["sha256"][:16])
    assert notification.payload == http_get(http, newer["href"])
    assert seconds < 5  # the goal (1 s) is measured by bench/live/, not asserted


def test_a_plain_get_of_latest_is_short_lived_and_404_for_an_unknown_device(servers):
    coap, http = servers
    http_upload(http, "cam-b", "2024-01-01T00:00:00Z", png_bytes(seed=3))

    async def get(path: str, **options) -> Message:
        context = await Context.create_client_context()
        try:
            message = Message(code=GET, uri=f"{coap.uri}{path}", **options)
            return await context.request(message).response
        finally:
            await context.shutdown()

    answer = asyncio.run(get("/devices/cam-b/images/latest"))
    assert answer.code == Code.CONTENT
    assert answer.opt.max_age == 1
    assert answer.opt.observe is None
    metadata = asyncio.run(get("/devices/cam-b/images/latest", accept=JSON))
    assert json.loads(metadata.payload)["deviceId"] == "cam-b"
    assert asyncio.run(get("/devices/nobody/images/latest")).code == Code.NOT_FOUND


def test_discovery_lists_each_devices_latest_as_observable(servers):
    coap, http = servers
    http_upload(http, "cam/ü", "2024-01-01T00:00:00Z", png_bytes(seed=4))

    async def discover() -> Message:
        context = await Context.create_client_context()
        try:
            message = Message(code=GET, uri=f"{coap.uri}/.well-known/core?rt=image.latest")
            return await context.request(message).response
        finally:
            await context.shutdown()

    links = {
        link.href: dict(link.attrs) for link in parse(asyncio.run(discover()).payload.decode())
    }
    assert "/devices/cam%2F%C3%BC/images/latest" in links
    assert "obs" in links["/devices/cam%2F%C3%BC/images/latest"]
    assert all(attrs["rt"] == "image.latest" for attrs in links.values())


# --- A bare socket: the client's side of RFC 7641 by hand -----------------------


class BareClient:
    """One UDP endpoint speaking CoAP message by message."""

    def __init__(self, coap: LiveCoap) -> None:
        self.address = ("127.0.0.1", coap.port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(5)

    def register(self, device: str, token: bytes) -> Message:
        request = Message(code=GET, uri_path=("devices", device, "images", "latest"), observe=0)
        request.opt.accept = JSON  # one small message per notification
        request.token, request.mtype, request.mid = token, Type.CON, random.randrange(1 << 16)
        self.sock.sendto(request.encode(), self.address)
        return self.receive()

    def receive(self, timeout: float = 5) -> Message:
        self.sock.settimeout(timeout)
        data, _ = self.sock.recvfrom(4096)
        return Message.decode(data)

    def answer(self, notification: Message, mtype: Type) -> None:
        reply = Message(code=Code.EMPTY)
        reply.mtype, reply.mid = mtype, notification.mid
        self.sock.sendto(reply.encode(), self.address)

    def close(self) -> None:
        self.sock.close()


def test_a_notification_answered_with_rst_ends_the_observation(servers):
    coap, http = servers
    http_upload(http, "cam-c", "2024-01-01T00:00:00Z", png_bytes(seed=5))
    client = BareClient(coap)
    try:
        assert client.register("cam-c", b"t1").opt.observe is not None
        stored = http_upload(http, "cam-c", "2024-01-02T00:00:00Z", png_bytes(seed=6))
        notification = client.receive()
        assert notification.mtype == Type.CON  # registered with a CON: confirmable notifications
        assert json.loads(notification.payload)["id"] == stored["id"]
        client.answer(notification, Type.RST)
        http_upload(http, "cam-c", "2024-01-03T00:00:00Z", png_bytes(seed=7))
        with pytest.raises(TimeoutError):
            client.receive(timeout=2)
    finally:
        client.close()


def test_registrations_are_capped_per_client(servers):
    coap, http = servers
    http_upload(http, "cam-d", "2024-01-01T00:00:00Z", png_bytes(seed=8))
    client = BareClient(coap)
    try:
        answers = [client.register("cam-d", bytes([n])) for n in range(4)]
        # IMAGES_OBSERVE_PER_PEER=3: the fourth is answered as a plain GET.
        assert [answer.opt.observe is not None for answer in answers] == [True] * 3 + [False]
        assert answers[3].code == Code.CONTENT
    finally:
        client.close()


def test_libcoap_coap_client_observes_latest(servers, tmp_path: Path):
    coap, http = servers
    binary = shutil.which("coap-client") or shutil.which("coap-client-notls")
    assert binary, "libcoap's coap-client is missing: scripts/test installs libcoap3-bin"
    http_upload(http, "cam-e", "2024-01-01T00:00:00Z", png_bytes(seed=9))
    out = tmp_path / "notifications.txt"
    with out.open("wb") as sink:
        client = subprocess.Popen(
            [binary, "-m", "get", "-s", "6", "-A", str(JSON)]
            + [f"coap://127.0.0.1:{coap.port}/devices/cam-e/images/latest"],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            time.sleep(1.5)  # registered
            stored = http_upload(http, "cam-e", "2024-01-02T00:00:00Z", png_bytes(seed=10))
            client.wait(timeout=20)
        finally:
            if client.poll() is None:
                client.kill()
    text = out.read_text(errors="replace")
    assert text.count('"deviceId":"cam-e"') == 2, text
    assert stored["id"] in text
