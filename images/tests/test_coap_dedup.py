"""RFC 7252 §4.5 deduplication in bounded memory (images.coap.dedup), against real aiocoap."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiocoap import CON, GET, POST, Context, Message
from aiocoap.numbers.codes import Code

from conftest import free_port, png_bytes
from images.coap import dedup
from images.coap.security import Access
from images.coap.server import site_build
from images.tests.conftest_coap import LiveCoap, start_runcoap


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runcoap-dedup")


@pytest.fixture(scope="module")
def server(log_dir: Path) -> Iterator[LiveCoap]:
    live = start_runcoap(log_dir)
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


def test_runcoap_writes_one_json_line_per_request_as_http_does(server, log_dir):
    exchange_get = Message(code=GET, uri_path=(".well-known", "core"))
    exchange_get.mtype, exchange_get.mid, exchange_get.token = CON, 0x4321, b"\x07"
    exchange(server.port, exchange_get.encode())
    lines = [
        json.loads(line[line.index("{") :])
        for line in (log_dir / "runcoap.log").read_text().splitlines()
        if '"transport": "coap"' in line
    ]
    discovery = [line for line in lines if line["path"] == "/.well-known/core"]
    assert discovery[-1]["method"] == "GET"
    assert discovery[-1]["status"] == "2.05"
    assert discovery[-1]["ms"] >= 0
    uploads = [line for line in lines if line["method"] == "POST"]
    assert uploads[0]["status"] == "2.01"
    assert uploads[0]["bytes_in"] > 0


# Discovery reads the database (each device's observable latest).
@pytest.mark.django_db(transaction=True)
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
