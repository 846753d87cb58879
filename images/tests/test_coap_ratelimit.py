"""API.md §6 over CoAP: token-mode uploads are rate-limited per device and per client as over HTTP.

4.29 Too Many Requests with Max-Age saying when to try again (RFC 8516).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from aiocoap import POST
from aiocoap.numbers.codes import Code

from conftest import png_bytes
from images.tests.conftest_coap import LiveCoap, start_runcoap
from images.tests.test_coap_oscore import Clients, provision


@pytest.fixture(scope="module")
def contexts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("oscore-rates") / "server"


@pytest.fixture(scope="module")
def devices(contexts_dir: Path) -> tuple[Path, Path]:
    return (
        provision(contexts_dir, contexts_dir.parent / "cam-1", "--device", "cam-1"),
        provision(contexts_dir, contexts_dir.parent / "cam-2", "--device", "cam-2"),
    )


@pytest.fixture(scope="module")
def clients(tmp_path_factory, contexts_dir, devices) -> Iterator[Clients]:
    live: LiveCoap = start_runcoap(
        tmp_path_factory.mktemp("runcoap-rates"),
        {"IMAGES_AUTH": "token", "IMAGES_RATE_DEVICE": "2/60", "IMAGES_RATE_CLIENT": "3/60"},
        ["--oscore-dir", str(contexts_dir)],
    )
    clients = Clients(live)
    yield clients
    clients.close()
    live.stop()


def upload(clients: Clients, credentials: Path, device: str, second: int):
    query = {"deviceId": device, "timestamp": f"2024-08-18T02:04:{second:02d}Z"}
    return clients.request(
        POST,
        "/collections/images",
        png_bytes(seed=second),
        credentials=credentials,
        query=query,
        content_format=23,
    )


def test_a_device_past_its_rate_then_a_client_past_its_rate_get_4_29(clients, devices):
    first, second = devices
    assert upload(clients, first, "cam-1", 1).code == Code.CREATED
    assert upload(clients, first, "cam-1", 2).code == Code.CREATED
    refused = upload(clients, first, "cam-1", 3)
    assert refused.code == Code.TOO_MANY_REQUESTS
    assert refused.opt.max_age > 0
    assert b"device 'cam-1'" in refused.payload
    # The same client address has now sent three uploads: another device's is refused too.
    refused = upload(clients, second, "cam-2", 4)
    assert refused.code == Code.TOO_MANY_REQUESTS
    assert b"too many uploads from 127.0.0.1" in refused.payload
    stored = clients.server.query("SELECT device_id FROM images_image ORDER BY timestamp")
    assert stored == [("cam-1",), ("cam-1",)]
