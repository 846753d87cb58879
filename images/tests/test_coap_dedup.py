"""RFC 7252 §4.5 deduplication in bounded memory (images.coap.dedup), against real aiocoap."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
from aiocoap import CON, GET, POST, Context, Message
from aiocoap.numbers.codes import Code

from conftest import free_port, png_bytes
from images.coap import dedup
from images.coap.security import Access
from images.coap.server import site_build
from images.tests.conftest_coap import LiveCoap, start_runcoap


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCoap]:
    live = start_runcoap(tmp_path_factory.mktemp("runcoap-dedup"))
    yield live
    live.stop()


def exchange(port: int, datagram: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        sock.sendto(datagram, ("127.0.0.1", port))
        return sock.recv(4096)


def test_a_retransmitted_upload_gets_the_same_answer_and_is_stored_once(server):
    request = Message(
        code=POST,
        uri_path=("collections", "images"),
        uri_query=("deviceId=dup", "timestamp=2024-08-18T02:04:07Z"),
        content_format=23,
        payload=png_bytes(seed=3),
    )
    request.mtype, request.mid, request.token = CON, 0x1234, b"\x01\x02"
    datagram = request.encode()
    first = exchange(server.port, datagram)
    again = exchange(server.port, datagram)  # the same message ID: a retransmission
    assert again == first
    assert Message.decode(first).code == Code.CREATED
    assert server.query("SELECT count(*) FROM images_image") == [(1,)]


def test_the_record_keeps_at_most_per_peer_entries_and_still_answers(monkeypatch):
    monkeypatch.setattr(dedup, "PER_PEER", 40)

    async def run() -> tuple[int, list[Code]]:
        site = site_build(access=Access(oscore_required=False))
        port = free_port(socket.SOCK_DGRAM)
        server = await Context.create_server_context(
            site, bind=("127.0.0.1", port), transports=["udp6"]
        )
        (manager,) = dedup.install(server)
        client = await Context.create_client_context()
        codes = []
        for _ in range(100):
            request = Message(code=GET, uri=f"coap://127.0.0.1:{port}/.well-known/core")
            codes.append((await client.request(request).response).code)
        entries = manager.entries()
        await client.shutdown()
        await server.shutdown()
        return entries, codes

    entries, codes = asyncio.run(run())
    assert entries == 40
    assert set(codes) == {Code.CONTENT}
