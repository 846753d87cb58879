"""API.md §13 in token mode: observing ``latest`` over CoAP needs OSCORE (RFC 8613 §4.1.3.5).

A live ``runcoap`` with ``IMAGES_AUTH=token`` and the contexts of
:mod:`images.tests.test_coap_oscore` (its fixtures, imported: this module
gets its own server and contexts). Observers are aiocoap's client, through
the client halves as ``aiocoap-client --credentials`` uses them, and a bare
UDP socket protecting and unprotecting by hand where the test must see what
travels on the wire, or that nothing does. Each newer image is uploaded over
CoAP through the device's own context.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path

import cbor2
import pytest
from aiocoap import GET, POST, Context, Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type
from aiocoap.oscore import FilesystemSecurityContext
from aiocoap.protocol import ClientObservation
from aiocoap.transports.oscore import OSCOREAddress

from conftest import png_bytes
from images.tests import test_coap_oscore as oscore
from images.tests.conftest_coap import LiveCoap
from images.tests.test_coap_oscore import provision

# Its fixtures, by name: this module gets a server and contexts of its own.
contexts_dir = oscore.contexts_dir
device = oscore.device
server = oscore.server
other_device = oscore.other_device
reader = oscore.reader

# Notifications come within 1 s (API.md §13; bench/ measures that): a bound with room
# for a busy machine. Silence is awaited for well over that second.
NOTIFIED_WITHIN = 10
SILENT_FOR = 2.5

_minutes = count(1)


def next_timestamp() -> str:
    """A timestamp later than every one before it in this module: each upload is the newest."""
    moment = datetime(2024, 8, 18, tzinfo=UTC) + timedelta(minutes=next(_minutes))
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def latest_uri(server: LiveCoap, device_id: str) -> str:
    return f"{server.uri}/devices/{device_id}/images/latest"


def etag_of(metadata: dict) -> bytes:
    """The ETag API.md §5 gives an image: its SHA-256, the first 8 bytes."""
    return bytes.fromhex(metadata["sha256"][:16])


class Observers:
    """aiocoap client contexts on one event loop: a plain one, and one per credentials file.

    Everything a test does with them runs in one coroutine (``run``), so that
    an observation stays open while uploads go out through the same contexts.
    A context directory is locked while loaded: each is loaded once, here.
    """

    def __init__(self) -> None:
        self._runner = asyncio.Runner()
        self._contexts: dict[Path | None, Context] = {}

    def run(self, coroutine):
        return self._runner.run(asyncio.wait_for(coroutine, 60))

    async def context(self, credentials: Path | None = None) -> Context:
        if credentials not in self._contexts:
            context = await Context.create_client_context()
            if credentials is not None:
                context.client_credentials.load_from_dict(json.loads(credentials.read_text()))
            self._contexts[credentials] = context
        return self._contexts[credentials]

    def close(self) -> None:
        for context in self._contexts.values():
            self._runner.run(context.shutdown())
        self._runner.close()


@pytest.fixture(scope="module")
def observers(server: LiveCoap) -> Iterator[Observers]:
    clients = Observers()
    yield clients
    clients.close()


async def upload(
    server: LiveCoap, context: Context, device_id: str, image: bytes
) -> tuple[dict, Message]:
    """A raw PNG upload through ``context``: the stored image's metadata, and its download."""
    request = Message(code=POST, uri=f"{server.uri}/collections/images", content_format=23)
    request.opt.uri_query = [f"deviceId={device_id}", f"timestamp={next_timestamp()}"]
    request.payload = image
    created = await context.request(request).response
    assert created.code == Code.CREATED, created.payload
    location = "/".join(created.opt.location_path)
    download = await context.request(Message(code=GET, uri=f"{server.uri}/{location}")).response
    assert download.code == Code.CONTENT
    return cbor2.loads(created.payload), download


def stop_observing(observation: ClientObservation) -> None:
    if not observation.cancelled:  # a refusal ended it already
        observation.cancel()


async def next_notification(observation: ClientObservation) -> Message:
    async for notification in observation:
        return notification
    raise AssertionError("the observation ended without a notification")


class BareObserver:
    """One UDP socket registering by hand, plain or protected with a client context."""

    def __init__(self, server: LiveCoap, credentials: Path | None = None) -> None:
        self.address = ("127.0.0.1", server.port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.security = (
            None if credentials is None else FilesystemSecurityContext(str(credentials.parent))
        )
        self.request_id = None

    def register(self, device_id: str) -> Message:
        """GET with Observe: 0, confirmable; the answer as it came (still protected, if it was)."""
        request = Message(code=GET, uri_path=("devices", device_id, "images", "latest"), observe=0)
        if self.security is not None:
            request, self.request_id = self.security.protect(request)
        request.token, request.mtype = bytes([random.randrange(256)]) * 4, Type.CON
        request.mid = random.randrange(1 << 16)
        self.sock.sendto(request.encode(), self.address)
        return self.receive()

    def receive(self, timeout: float = NOTIFIED_WITHIN) -> Message:
        self.sock.settimeout(timeout)
        data, _ = self.sock.recvfrom(4096)
        message = Message.decode(data)
        if message.mtype == Type.CON:  # a confirmable notification: acknowledge it
            ack = Message(code=Code.EMPTY)
            ack.mtype, ack.mid = Type.ACK, message.mid
            self.sock.sendto(ack.encode(), self.address)
        return message

    def unprotect(self, message: Message) -> Message:
        assert self.security is not None
        inner, _ = self.security.unprotect(message, self.request_id)
        return inner

    def assert_silent(self) -> None:
        """No notification (nor anything else) comes."""
        with pytest.raises(TimeoutError):
            self.receive(timeout=SILENT_FOR)

    def close(self) -> None:
        self.sock.close()


def uploaded_while_observed(server: LiveCoap, observers: Observers, device: Path) -> Message:
    """cam-1 uploads a newer image while observing its own latest; the notification it got.

    That observation is the control: it must get the newer image, so that
    silence elsewhere means "not observing", not "nothing happened".
    """

    async def scenario() -> Message:
        context = await observers.context(device)
        pending = context.request(Message(code=GET, uri=latest_uri(server, "cam-1"), observe=0))
        try:
            registration = await pending.response
            assert registration.opt.observe is not None
            _, download = await upload(server, context, "cam-1", png_bytes(seed=60))
            notification = await asyncio.wait_for(
                next_notification(pending.observation), NOTIFIED_WITHIN
            )
            assert notification.payload == download.payload
            return notification
        finally:
            stop_observing(pending.observation)

    return observers.run(scenario())


@pytest.fixture(scope="module")
def cam_1_has_an_image(server: LiveCoap, observers: Observers, device: Path) -> dict:
    async def first() -> dict:
        metadata, _ = await upload(server, await observers.context(device), "cam-1", png_bytes())
        return metadata

    return observers.run(first())


# --- Without OSCORE, or through the wrong context -----------------------------------


def test_a_plain_observe_registration_is_4_01_and_never_notified(
    server, observers, device, cam_1_has_an_image
):
    bare = BareObserver(server)
    try:
        answer = bare.register("cam-1")
        assert answer.code == Code.UNAUTHORIZED
        assert answer.opt.observe is None  # RFC 7641 §4.1: not added to the observers
        assert answer.opt.oscore is None
        assert b"OSCORE" in answer.payload
        assert answer.opt.content_format != 23  # a diagnostic, not the image
        uploaded_while_observed(server, observers, device)
        bare.assert_silent()
    finally:
        bare.close()


def test_observing_another_devices_latest_through_a_device_context_is_4_03(
    server, observers, device, other_device, cam_1_has_an_image
):
    async def register() -> Message:
        context = await observers.context(other_device)
        pending = context.request(Message(code=GET, uri=latest_uri(server, "cam-1"), observe=0))
        try:
            return await pending.response
        finally:
            stop_observing(pending.observation)

    answer = observers.run(register())
    assert answer.code == Code.FORBIDDEN
    assert answer.opt.observe is None
    assert isinstance(answer.remote, OSCOREAddress)  # refused inside the protection
    assert b"device" in answer.payload


def test_a_refused_device_context_is_never_notified(
    server, observers, device, contexts_dir, cam_1_has_an_image, tmp_path
):
    """On the wire: cam-2's protected registration for cam-1 leaves nothing behind."""
    credentials = provision(contexts_dir, tmp_path / "cam-2-bare", "--device", "cam-2")
    bare = BareObserver(server, credentials)
    try:
        answer = bare.register("cam-1")
        assert answer.opt.oscore is not None
        inner = bare.unprotect(answer)
        assert inner.code == Code.FORBIDDEN
        assert inner.opt.observe is None
        uploaded_while_observed(server, observers, device)
        bare.assert_silent()
    finally:
        bare.close()


# --- Through the device's own context, or a reader's ------------------------------------


def test_the_devices_own_context_observes_its_latest_protected(
    server, observers, device, cam_1_has_an_image
):
    async def scenario() -> tuple[Message, Message, dict, Message, Message]:
        context = await observers.context(device)
        current = await context.request(Message(code=GET, uri=latest_uri(server, "cam-1"))).response
        pending = context.request(Message(code=GET, uri=latest_uri(server, "cam-1"), observe=0))
        try:
            registration = await pending.response
            newer, download = await upload(server, context, "cam-1", png_bytes(seed=21))
            notification = await asyncio.wait_for(
                next_notification(pending.observation), NOTIFIED_WITHIN
            )
        finally:
            stop_observing(pending.observation)
        return current, registration, newer, download, notification

    current, registration, newer, download, notification = observers.run(scenario())
    assert registration.code == Code.CONTENT
    assert registration.opt.observe is not None
    assert isinstance(registration.remote, OSCOREAddress)
    assert registration.opt.content_format == 23
    assert registration.payload == current.payload
    assert registration.opt.etag == current.opt.etag
    assert notification.code == Code.CONTENT
    assert isinstance(notification.remote, OSCOREAddress)  # came through the context
    assert notification.opt.observe is not None
    assert notification.opt.etag == etag_of(newer) != registration.opt.etag
    assert notification.payload == download.payload


def test_a_readers_context_observes_any_device(
    server, observers, device, other_device, reader, cam_1_has_an_image
):
    async def scenario() -> dict[str, tuple[Message, dict, Message, Message]]:
        watcher = await observers.context(reader)
        seen = {}
        for device_id, credentials, seed in (("cam-1", device, 31), ("cam-2", other_device, 32)):
            uploader = await observers.context(credentials)
            if device_id == "cam-2":  # cam-2 has no image yet: one to register on
                await upload(server, uploader, "cam-2", png_bytes(seed=30))
            uri = latest_uri(server, device_id)
            pending = watcher.request(Message(code=GET, uri=uri, observe=0))
            try:
                registration = await pending.response
                newer, download = await upload(server, uploader, device_id, png_bytes(seed=seed))
                notification = await asyncio.wait_for(
                    next_notification(pending.observation), NOTIFIED_WITHIN
                )
            finally:
                stop_observing(pending.observation)
            seen[device_id] = registration, newer, download, notification
        return seen

    for device_id, (registration, newer, download, notification) in observers.run(
        scenario()
    ).items():
        assert registration.code == Code.CONTENT, device_id
        assert registration.opt.observe is not None, device_id
        assert isinstance(notification.remote, OSCOREAddress), device_id
        assert notification.opt.etag == etag_of(newer), device_id
        assert notification.payload == download.payload, device_id


def test_on_the_wire_the_registration_and_notification_are_protected(
    server, observers, device, contexts_dir, cam_1_has_an_image, tmp_path
):
    """RFC 8613 §4.2 and §8.3: outer 2.05 with OSCORE and Observe, the image only inside."""
    credentials = provision(contexts_dir, tmp_path / "wire", "--reader", "wire")
    bare = BareObserver(server, credentials)
    try:
        answer = bare.register("cam-1")
        assert answer.code == Code.CONTENT  # the outer code of a protected notification
        assert answer.opt.oscore is not None
        assert answer.opt.observe is not None
        assert answer.opt.etag is None  # inner options only
        assert answer.opt.content_format is None
        registration = bare.unprotect(answer)
        assert registration.code == Code.CONTENT
        assert registration.opt.content_format == 23
        assert registration.payload.startswith(b"\x89PNG")
        assert registration.payload not in answer.payload

        control = uploaded_while_observed(server, observers, device)
        sent = bare.receive()
        assert sent.code == Code.CONTENT
        assert sent.opt.oscore is not None
        assert sent.opt.observe is not None
        assert sent.opt.observe != answer.opt.observe
        notification = bare.unprotect(sent)
        assert notification.code == Code.CONTENT
        assert notification.opt.etag == control.opt.etag != registration.opt.etag
        assert notification.payload == control.payload
        assert notification.payload not in sent.payload
    finally:
        bare.close()
