"""The original README's five requests, byte for byte, against a live runserver.

Run in the README's order (API.md §9): discovery twice, the JSON upload
(201), the CBOR upload of the same image for the same key (a retry: 200 with
the first upload's metadata), then the download, whose pixels must equal the
image that was sent.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path

import cbor2
import pytest

from conftest import ROOT, start_runserver, stop
from formats.linkformat import parse
from images.compression import pixels_equal

# The original README's requests, kept in the repository (testdata/README.md).
COMMANDS = ROOT / "testdata" / "original-readme-curl-commands.txt"


def readme_commands(base_url: str) -> list[list[str]]:
    commands = []
    for line in COMMANDS.read_text().splitlines():
        if line.strip():
            argv = shlex.split(line)
            assert argv[0] == "curl"
            commands.append([arg.replace("http://localhost:8000", base_url) for arg in argv])
    return commands


def run_curl(argv: list[str], cwd: Path) -> tuple[int, dict[str, str], bytes]:
    headers_file = cwd / "headers.txt"
    result = subprocess.run(
        [*argv, "--silent", "--show-error", "--dump-header", str(headers_file)],
        cwd=cwd,
        capture_output=True,
        timeout=60,
        check=True,
    )
    status_line, *header_lines = headers_file.read_text().strip().splitlines()
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, result.stdout


def decode(headers: dict[str, str], body: bytes) -> dict:
    if headers["content-type"] == "application/cbor":
        return cbor2.loads(body)
    return json.loads(body)


@pytest.fixture
def server(tmp_path):
    server = start_runserver(tmp_path)
    yield server
    stop(server.process)


def test_the_readme_requests_work_in_order(server, tmp_path):
    discover, collections, upload_json, upload_cbor, download = readme_commands(server.url)

    for argv in (discover, collections):
        status, headers, body = run_curl(argv, tmp_path)
        assert status == 200
        assert headers["content-type"] == "application/link-format"
        assert body.decode().startswith('</collections/images>;rt="simple.act";if="core.b"')
        assert parse(body.decode())[0].href == "/collections/images"

    status, headers, body = run_curl(upload_json, tmp_path)
    assert status == 201
    first = decode(headers, body)
    assert headers["location"] == first["href"]
    assert (first["deviceId"], first["timestamp"]) == ("12345", "2024-08-18T02:04:07Z")

    status, headers, body = run_curl(upload_cbor, tmp_path)
    assert status == 200
    assert decode(headers, body) == first

    status, headers, _ = run_curl(download, tmp_path)
    assert status == 200
    assert headers["content-type"] == "image/png"
    sent = base64.b64decode(re.search(r'"imageData":"([^"]+)"', upload_json[2]).group(1))
    assert pixels_equal((tmp_path / "image.png").read_bytes(), sent)


@pytest.mark.parametrize("index", [2, 3], ids=["json", "cbor"])
def test_each_readme_upload_alone_on_a_fresh_key_is_201(server, tmp_path, index):
    status, headers, body = run_curl(readme_commands(server.url)[index], tmp_path)
    assert status == 201
    assert decode(headers, body)["deviceId"] == "12345"


# --- This project's own README ----------------------------------------------------


def this_readmes_examples() -> str:
    """The shell blocks of README.md's HTTP endpoint sections and its first operations block.

    From "## Endpoints" up to the CoAP section (which needs a CoAP server and
    libcoap, tested in test_coap_libcoap), in order. The live section after it
    holds streams that never end (tested in test_events and test_live_serve).
    """
    text = (ROOT / "README.md").read_text()
    endpoints = text[text.index("## Endpoints") : text.index("### CoAP (RFC 7252, UDP)")]
    operations = text[text.index("### Operations") :]
    blocks = re.findall(r"```sh\n(.*?)```", endpoints, flags=re.DOTALL)
    blocks.append(re.findall(r"```sh\n(.*?)```", operations, flags=re.DOTALL)[0])
    return "\n".join(blocks)


def test_this_readmes_examples_run_top_to_bottom_as_written(server, tmp_path):
    (tmp_path / "testdata").symlink_to(ROOT / "testdata")
    script = this_readmes_examples().replace("http://localhost:8000", server.url)
    assert "$ID" in script  # the examples chain: an id from a listing, used below
    # Every curl fails the script on an HTTP error (4xx, 5xx), as a person would notice.
    prelude = (
        'set -euo pipefail\ncurl() { command curl --fail-with-body --silent --show-error "$@"; }\n'
    )
    # The examples' python3 is the one the README's set-up installed into:
    # the interpreter running this suite (a virtual environment in CI).
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    result = subprocess.run(
        ["bash", "-c", prelude + script],
        cwd=tmp_path,
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "HTTP/1.1 304" in result.stdout
    assert "HTTP/1.1 204" in result.stdout
    assert "\n100\n" in result.stdout  # the range request's byte count
    with tarfile.open(tmp_path / "cam-1.tar") as archive:
        exported = archive.getnames()
    assert exported[:2] == ["cam-1_20240818T020407Z.png", "cam-1_20240818T020407Z.png.json"]
    assert len(exported) == 8  # JSON, raw, CBOR and multipart uploads, each with its .json
    assert (tmp_path / "thumb.webp").read_bytes()[8:12] == b"WEBP"
    assert pixels_equal(
        (tmp_path / "image.png").read_bytes(), (ROOT / "testdata/skimage__brick.png").read_bytes()
    )
