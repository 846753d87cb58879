"""API.md §5: interoperability with libcoap's ``coap-client`` against a live ``runcoap``.

The commands are the ones docs/coap.md shows.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import cbor2
import pytest
from PIL import Image as PILImage

from conftest import png_bytes
from formats.linkformat import parse
from images.compression import pixels_equal
from images.tests.conftest_coap import LiveCoap, start_runcoap

COAP_CLIENT = shutil.which("coap-client") or shutil.which("coap-client-notls")

pytestmark = pytest.mark.skipif(
    COAP_CLIENT is None,
    reason="libcoap's coap-client is not installed (apt-get install libcoap3-bin)",
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCoap]:
    live = start_runcoap(tmp_path_factory.mktemp("runcoap"))
    yield live
    live.stop()


def coap_client(*args: str) -> subprocess.CompletedProcess:
    """Run coap-client; it reports response codes other than 2.xx on stderr."""
    return subprocess.run([COAP_CLIENT, *args], capture_output=True, timeout=60, check=True)


def test_coap_client_discovers_the_images_collection(server):
    result = coap_client("-m", "get", f"{server.uri}/.well-known/core")
    links = parse(result.stdout.decode().strip())
    assert (links[0].href, dict(links[0].attrs)) == (
        "/collections/images",
        {"rt": "simple.act", "if": "core.b"},
    )


def test_coap_client_filters_are_anded(server):
    both = coap_client("-m", "get", f"{server.uri}/.well-known/core?rt=simple*&if=core.b")
    assert [link.href for link in parse(both.stdout.decode().strip())] == ["/collections/images"]
    neither = coap_client("-m", "get", f"{server.uri}/.well-known/core?rt=simple*&if=core.ll")
    assert neither.stdout.strip() == b""
    assert neither.stderr == b""


def test_coap_client_uploads_a_300_kb_png_block_wise_and_downloads_the_same_pixels(
    server, tmp_path
):
    image = PILImage.frombytes("RGB", (320, 320), os.urandom(320 * 320 * 3))
    original = io.BytesIO()
    image.save(original, "PNG")
    upload = tmp_path / "photo.png"
    upload.write_bytes(original.getvalue())
    assert len(original.getvalue()) > 300_000
    key = "deviceId=cam-1&timestamp=2024-08-18T02:04:07Z"

    coap_client(
        "-m", "post", "-t", "23", "-b", "1024", "-f", str(upload),
        "-o", str(tmp_path / "meta.cbor"), f"{server.uri}/collections/images?{key}",
    )  # fmt: skip
    meta = cbor2.loads((tmp_path / "meta.cbor").read_bytes())
    assert (meta["deviceId"], meta["contentType"]) == ("cam-1", "image/png")
    assert meta["originalSize"] == upload.stat().st_size

    coap_client(
        "-m", "get", "-b", "1024", "-o", str(tmp_path / "by-key.png"),
        f"{server.uri}/collections/images?{key}",
    )  # fmt: skip
    assert pixels_equal((tmp_path / "by-key.png").read_bytes(), upload.read_bytes())

    coap_client("-m", "get", "-o", str(tmp_path / "by-id.png"), f"{server.uri}{meta['href']}")
    assert (tmp_path / "by-id.png").read_bytes() == (tmp_path / "by-key.png").read_bytes()


def test_coap_client_uploads_cbor_and_a_retry_gets_the_same_image(server, tmp_path: Path):
    body = tmp_path / "upload.cbor"
    body.write_bytes(
        cbor2.dumps(
            {"deviceId": "cam-2", "timestamp": "2024-08-18T02:04:07Z", "imageData": png_bytes()}
        )
    )
    answers = []
    for attempt in ("first.cbor", "retry.cbor"):
        coap_client(
            "-m", "post", "-t", "60", "-f", str(body), "-o", str(tmp_path / attempt),
            f"{server.uri}/collections/images",
        )  # fmt: skip
        answers.append(cbor2.loads((tmp_path / attempt).read_bytes()))
    assert answers[0]["deviceId"] == "cam-2"
    assert answers[1] == answers[0]


def test_coap_client_sees_the_error_codes(server):
    unsupported = coap_client(
        "-m", "post", "-t", "0", "-e", "hello", f"{server.uri}/collections/images"
    )
    assert unsupported.stderr.startswith(b"4.15")
    missing = coap_client(
        "-m",
        "get",
        f"{server.uri}/collections/images?deviceId=nobody&timestamp=2024-08-18T02:04:07Z",
    )
    assert missing.stderr.startswith(b"4.04")
