"""API.md §6 over CoAP: token mode needs OSCORE (RFC 8613) contexts bound to a device or reader.

A live ``runcoap`` with ``IMAGES_AUTH=token``, contexts provisioned with
``manage.py coapcontext``, and aiocoap's client using the client halves as
``aiocoap-client --credentials`` does.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cbor2
import pytest
from aiocoap import GET, POST, Context, Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type
from aiocoap.oscore import COSE_KID, FilesystemSecurityContext, NotAProtectedMessage
from django.core.management import call_command
from django.core.management.base import CommandError

from conftest import ROOT, png_bytes
from images.coap.security import Binding, ServerContexts
from images.compression import pixels_equal
from images.tests.conftest_coap import LiveCoap, noise_png, start_runcoap

KEY = {"timestamp": "2024-08-18T02:04:07Z"}


def provision(contexts_dir: Path, out: Path, *who: str, uri: str = "coap://*") -> Path:
    """``coapcontext`` as an operator runs it; the client's credentials.json."""
    stdout = io.StringIO()
    call_command(
        "coapcontext",
        *who,
        "--oscore-dir",
        str(contexts_dir),
        "--out",
        str(out),
        "--uri",
        uri,
        stdout=stdout,
        stderr=io.StringIO(),
    )
    return Path(stdout.getvalue().strip())


def revoke(contexts_dir: Path, *who: str) -> str:
    stdout = io.StringIO()
    call_command("coapcontext", *who, "--revoke", "--oscore-dir", str(contexts_dir), stdout=stdout)
    return stdout.getvalue()


async def response_to(context: Context, message: Message, *, blockwise: bool = True) -> Message:
    return await context.request(message, handle_blockwise=blockwise).response


class Clients:
    """aiocoap client contexts on one event loop: a plain one, and one per credentials file."""

    def __init__(self, server: LiveCoap) -> None:
        self.server = server
        self._runner = asyncio.Runner()
        self._contexts: dict[Path | None, Context] = {}

    def request(
        self,
        code: Code,
        path: str,
        payload: bytes = b"",
        *,
        credentials: Path | None = None,
        query: dict | None = None,
        **options,
    ) -> Message:
        """One request; aiocoap does Block1 and Block2 itself unless told not to."""
        blockwise = options.pop("handle_blockwise", True)
        message = Message(code=code, uri=f"{self.server.uri}{path}", payload=payload, **options)
        if query is not None:
            message.opt.uri_query = [f"{name}={value}" for name, value in query.items()]
        context = self._context(credentials)
        return self._runner.run(response_to(context, message, blockwise=blockwise))

    def _context(self, credentials: Path | None) -> Context:
        if credentials not in self._contexts:
            context = self._runner.run(Context.create_client_context())
            if credentials is not None:
                # What aiocoap-client --credentials does with a .json file.
                context.client_credentials.load_from_dict(json.loads(credentials.read_text()))
            self._contexts[credentials] = context
        return self._contexts[credentials]

    def close(self) -> None:
        for context in self._contexts.values():
            self._runner.run(context.shutdown())
        self._runner.close()


@pytest.fixture(scope="module")
def contexts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("oscore") / "server"


@pytest.fixture(scope="module")
def device(contexts_dir: Path) -> Path:
    """Provisioned before the server starts: loaded at startup."""
    return provision(contexts_dir, contexts_dir.parent / "cam-1", "--device", "cam-1")


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, contexts_dir: Path, device: Path
) -> Iterator[LiveCoap]:
    live = start_runcoap(
        tmp_path_factory.mktemp("runcoap"),
        {"IMAGES_AUTH": "token"},
        ["--oscore-dir", str(contexts_dir)],
    )
    yield live
    live.stop()


@pytest.fixture(scope="module")
def other_device(server: LiveCoap, contexts_dir: Path) -> Path:
    """Provisioned while the server runs: picked up without a restart."""
    return provision(contexts_dir, contexts_dir.parent / "cam-2", "--device", "cam-2")


@pytest.fixture(scope="module")
def reader(server: LiveCoap, contexts_dir: Path) -> Path:
    return provision(contexts_dir, contexts_dir.parent / "dash", "--reader", "dash")


@pytest.fixture(scope="module")
def coap(server: LiveCoap) -> Iterator[Clients]:
    clients = Clients(server)
    yield clients
    clients.close()


def raw_upload(coap: Clients, image: bytes, device_id: str, **options) -> Message:
    query = {"deviceId": device_id, **KEY}
    return coap.request(
        POST, "/collections/images", image, query=query, content_format=23, **options
    )


def rows_for(server: LiveCoap, device_id: str) -> int:
    sql = "SELECT COUNT(*) FROM images_image WHERE device_id = ?"
    return server.query(sql, (device_id,))[0][0]


@pytest.fixture(scope="module")
def uploaded(coap: Clients, device: Path) -> tuple[bytes, Message]:
    """An image cam-1 uploaded through its context, and the answer."""
    image = png_bytes(seed=7)
    response = raw_upload(coap, image, "cam-1", credentials=device)
    assert response.code == Code.CREATED
    return image, response


# --- Plain requests -------------------------------------------------------------


@pytest.mark.parametrize("path", ["/.well-known/core", "/collections"])
def test_discovery_stays_open_without_oscore(coap, path):
    response = coap.request(GET, path)
    assert response.code == Code.CONTENT
    assert response.payload.startswith(b"</collections/images>")


@pytest.mark.parametrize(
    ("content_format", "body"),
    [
        (23, png_bytes()),
        (60, cbor2.dumps({"deviceId": "plain-1", **KEY, "imageData": png_bytes()})),
        (0, b"no Content-Format check comes before authentication"),
    ],
)
def test_a_plain_upload_is_4_01_and_stores_nothing(coap, server, content_format, body):
    query = {"deviceId": "plain-1", **KEY}
    response = coap.request(
        POST, "/collections/images", body, query=query, content_format=content_format
    )
    assert response.code == Code.UNAUTHORIZED
    assert b"OSCORE" in response.payload
    assert rows_for(server, "plain-1") == 0


def test_a_plain_download_is_4_01(coap, uploaded):
    by_key = coap.request(GET, "/collections/images", query={"deviceId": "cam-1", **KEY})
    by_id = coap.request(GET, "/" + "/".join(uploaded[1].opt.location_path))
    assert by_key.code == by_id.code == Code.UNAUTHORIZED


# --- Through a bound context ----------------------------------------------------------


def test_an_upload_through_the_devices_context_is_2_01(coap, server, uploaded):
    image, response = uploaded
    meta = cbor2.loads(response.payload)
    assert (meta["deviceId"], meta["originalSize"]) == ("cam-1", len(image))
    assert response.opt.location_path[:2] == ("collections", "images")
    assert rows_for(server, "cam-1") == 1


def test_a_retried_upload_through_the_context_gets_the_same_2_01(coap, device, uploaded):
    again = raw_upload(coap, uploaded[0], "cam-1", credentials=device)
    assert again.code == Code.CREATED
    assert again.opt.location_path == uploaded[1].opt.location_path


def test_an_upload_as_another_device_is_4_03_and_stores_nothing(coap, server, device):
    response = raw_upload(coap, png_bytes(seed=8), "cam-9", credentials=device)
    assert response.code == Code.FORBIDDEN
    assert b"cam-9" in response.payload
    assert rows_for(server, "cam-9") == 0


def test_an_envelope_naming_another_device_is_4_03(coap, server, device):
    body = cbor2.dumps({"deviceId": "cam-9", **KEY, "imageData": png_bytes(seed=9)})
    response = coap.request(
        POST, "/collections/images", body, content_format=60, credentials=device
    )
    assert response.code == Code.FORBIDDEN
    assert rows_for(server, "cam-9") == 0


def test_a_context_bound_to_another_device_is_4_03(coap, server, other_device):
    response = raw_upload(coap, png_bytes(seed=10), "cam-1", credentials=other_device)
    assert response.code == Code.FORBIDDEN
    assert raw_upload(coap, png_bytes(seed=10), "cam-2", credentials=other_device).code == (
        Code.CREATED
    )


def test_a_readers_context_may_not_upload(coap, reader):
    assert raw_upload(coap, png_bytes(seed=11), "dash", credentials=reader).code == Code.FORBIDDEN


@pytest.mark.parametrize("who", ["device", "reader"])
def test_a_download_through_a_device_or_reader_context_is_2_05(coap, uploaded, who, request):
    credentials = request.getfixturevalue(who)
    image, answer = uploaded
    by_key = coap.request(
        GET, "/collections/images", query={"deviceId": "cam-1", **KEY}, credentials=credentials
    )
    by_id = coap.request(GET, "/" + "/".join(answer.opt.location_path), credentials=credentials)
    assert by_key.code == by_id.code == Code.CONTENT
    assert by_key.opt.content_format == 23
    assert pixels_equal(by_key.payload, image)
    assert by_id.payload == by_key.payload


def test_another_devices_context_reads_none_of_its_images(coap, uploaded, other_device):
    """API.md §15: a device's context reads its own device's images only (4.03 otherwise)."""
    _, answer = uploaded
    by_key = coap.request(
        GET, "/collections/images", query={"deviceId": "cam-1", **KEY}, credentials=other_device
    )
    by_id = coap.request(GET, "/" + "/".join(answer.opt.location_path), credentials=other_device)
    listing = coap.request(GET, "/devices/cam-1/images", credentials=other_device)
    assert by_key.code == by_id.code == listing.code == Code.FORBIDDEN


def test_a_100_kb_image_goes_block_wise_both_ways_through_oscore(coap, server, device, reader):
    image = noise_png(185)
    assert len(image) > 100_000
    query = {"deviceId": "cam-1", "timestamp": "2024-08-18T03:00:00Z"}
    first_block = coap.request(
        POST,
        "/collections/images",
        image[:1024],
        query=query,
        content_format=23,
        block1=(0, True, 6),
        size1=len(image),
        credentials=device,
        handle_blockwise=False,
    )
    # Block1 is inside the protected request (RFC 8613 §4.1.3.4.1): the resource sees it.
    assert first_block.code == Code.CONTINUE
    response = coap.request(
        POST, "/collections/images", image, query=query, content_format=23, credentials=device
    )
    assert response.code == Code.CREATED
    download = coap.request(GET, "/" + "/".join(response.opt.location_path), credentials=reader)
    assert download.code == Code.CONTENT
    assert pixels_equal(download.payload, image)


# --- Replay, unknown and revoked contexts -----------------------------------------------


def udp_exchange(port: int, datagram: Message) -> Message:
    datagram.mtype, datagram.mid = Type.CON, random.randrange(1 << 16)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(datagram.encode(), ("127.0.0.1", port))
        return Message.decode(sock.recvfrom(2048)[0])


def test_a_replayed_request_is_4_01_replay_detected(server, contexts_dir):
    credentials = provision(contexts_dir, contexts_dir.parent / "replayer", "--reader", "replay")
    context = FilesystemSecurityContext(str(credentials.parent))
    request = Message(code=GET, uri_path=("collections", "images"), uri_query=["deviceId=x"])
    protected, _ = context.protect(request)
    protected.token = b"\x01"
    first = udp_exchange(server.port, protected)
    # A new message (another Message ID) carrying the same protected request:
    # not a retransmission the message layer would answer again, but a replay.
    replayed = udp_exchange(server.port, protected)
    assert first.code == Code.CHANGED  # OSCORE's outer code for any protected answer
    assert first.opt.oscore is not None
    assert replayed.code == Code.UNAUTHORIZED
    assert replayed.payload == b"Replay detected"


def test_after_a_crash_the_replay_window_is_recovered_with_echo(tmp_path):
    """RFC 8613 Appendix B.1.2: a server that lost its replay window asks for an Echo."""
    contexts = tmp_path / "server"
    credentials = provision(contexts, tmp_path / "client", "--device", "crash-1")
    context = FilesystemSecurityContext(str(credentials.parent))
    runner = asyncio.Runner()
    client = runner.run(Context.create_client_context())
    client.client_credentials["coap://*"] = context

    def start(name: str) -> LiveCoap:
        (tmp_path / name).mkdir()
        args = ["--oscore-dir", str(contexts)]
        return start_runcoap(tmp_path / name, {"IMAGES_AUTH": "token"}, args)

    def upload(server: LiveCoap, hour: int) -> Message:
        request = Message(code=POST, uri=f"{server.uri}/collections/images", content_format=23)
        request.opt.uri_query = ["deviceId=crash-1", f"timestamp=2024-08-18T{hour:02}:00:00Z"]
        request.payload = png_bytes(seed=hour)
        return runner.run(response_to(client, request))

    first = start("first")
    try:
        assert upload(first, 1).code == Code.CREATED
        captured, request_id = context.protect(Message(code=GET, uri_path=("collections",)))
        captured.token = b"\x03"
        assert udp_exchange(first.port, captured).code == Code.CHANGED
    finally:
        first.process.kill()  # no clean shutdown: the replay window is not saved
        first.process.wait()
    second = start("second")
    try:
        answer, _ = context.unprotect(udp_exchange(second.port, captured), request_id)
        # Not served: the server cannot tell a replay now, so it asks for an Echo.
        assert answer.code == Code.UNAUTHORIZED
        assert answer.opt.echo is not None
        # aiocoap's client answers the Echo by itself.
        assert upload(second, 2).code == Code.CREATED
    finally:
        second.stop()
        runner.run(client.shutdown())
        runner.close()


def test_a_request_under_an_unknown_kid_is_4_01(server, tmp_path):
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "secret.json").write_text(
        json.dumps({"secret_hex": "00" * 32, "sender-id_hex": "7f7f", "recipient-id_hex": ""})
    )
    protected, _ = FilesystemSecurityContext(str(stranger)).protect(
        Message(code=GET, uri_path=("collections", "images"))
    )
    protected.token = b"\x02"
    assert udp_exchange(server.port, protected).code == Code.UNAUTHORIZED


def test_a_context_revoked_while_running_is_refused_at_once(coap, server, contexts_dir):
    credentials = provision(contexts_dir, contexts_dir.parent / "late", "--device", "late-1")
    assert raw_upload(coap, png_bytes(seed=12), "late-1", credentials=credentials).code == (
        Code.CREATED
    )
    assert revoke(contexts_dir, "--device", "late-1").startswith("revoked ")
    # The server answers 4.01 unprotected: it no longer has the context to protect it with.
    with pytest.raises(NotAProtectedMessage) as refused:
        raw_upload(coap, png_bytes(seed=13), "late-1", credentials=credentials)
    assert refused.value.plain_message.code == Code.UNAUTHORIZED


def test_aiocoap_client_uploads_with_the_credentials_file(server, contexts_dir):
    """The command docs/coap.md shows, run as shown."""
    credentials = provision(contexts_dir, contexts_dir.parent / "cli", "--device", "cli-1")
    image = contexts_dir.parent / "cli.png"
    image.write_bytes(png_bytes(seed=14))
    uri = f"{server.uri}/collections/images?deviceId=cli-1&timestamp=2024-08-18T02:04:07Z"
    client = Path(sys.executable).with_name("aiocoap-client")
    done = subprocess.run(
        [client, "--credentials", credentials, "-m", "POST", "--content-format", "image/png"]
        + ["--accept", "application/json", "--payload", f"@{image}", uri],
        capture_output=True,
        timeout=30,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["deviceId"] == "cli-1"


# --- Provisioning (no server) ---------------------------------------------------------


def test_coapcontext_writes_mirrored_halves_with_private_secrets(tmp_path):
    credentials = provision(tmp_path / "server", tmp_path / "client", "--device", "cam-1")
    server_side, client_side = tmp_path / "server" / "01", tmp_path / "client"
    for half in (server_side, client_side):
        assert stat.S_IMODE(half.stat().st_mode) == 0o700
        assert stat.S_IMODE((half / "secret.json").stat().st_mode) == 0o600
    assert (server_side / "secret.json").read_text() == (client_side / "secret.json").read_text()
    server_settings = json.loads((server_side / "settings.json").read_text())
    client_settings = json.loads((client_side / "settings.json").read_text())
    assert server_settings["recipient-id_hex"] == client_settings["sender-id_hex"] == "01"
    assert server_settings["sender-id_hex"] == client_settings["recipient-id_hex"]
    assert json.loads((server_side / "binding.json").read_text()) == {"device": "cam-1"}
    assert json.loads(credentials.read_text()) == {
        "coap://*": {"oscore": {"basedir": f"{client_side.resolve()}/"}}
    }


def test_coapcontext_gives_each_context_the_shortest_free_id(tmp_path):
    contexts = tmp_path / "server"
    for number in range(3):
        provision(contexts, tmp_path / f"c{number}", "--device", f"d{number}")
    revoke(contexts, "--device", "d1")
    provision(contexts, tmp_path / "again", "--reader", "r")
    listing = io.StringIO()
    call_command("coapcontext", "--list", "--oscore-dir", str(contexts), stdout=listing)
    assert listing.getvalue().splitlines() == ["01\tdevice\td0", "02\treader\tr", "03\tdevice\td2"]


def test_coapcontext_refuses_an_existing_out_dir_and_an_unknown_revocation(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(CommandError, match="exists"):
        provision(tmp_path / "server", tmp_path / "taken", "--device", "cam-1")
    with pytest.raises(CommandError, match="no OSCORE context"):
        revoke(tmp_path / "server", "--device", "cam-1")
    assert not (tmp_path / "server").exists()


def test_server_contexts_follow_the_directory(tmp_path):
    contexts = tmp_path / "server"
    loaded = ServerContexts(contexts)
    with pytest.raises(KeyError):
        loaded.find_oscore({COSE_KID: b"\x01"})
    provision(contexts, tmp_path / "client", "--device", "cam-1")
    found = loaded.find_oscore({COSE_KID: b"\x01"})
    assert found.authenticated_claims == [Binding("device", "cam-1")]
    revoke(contexts, "--device", "cam-1")
    with pytest.raises(KeyError):
        loaded.find_oscore({COSE_KID: b"\x01"})
    loaded.close()


def test_server_contexts_see_a_change_after_a_quiet_spell(tmp_path):
    """Once the listing is older than the timestamp granularity, one stat tells a change."""
    contexts = tmp_path / "server"
    provision(contexts, tmp_path / "first", "--device", "cam-1")
    an_hour_ago = time.time() - 3600
    os.utime(contexts, (an_hour_ago, an_hour_ago))
    loaded = ServerContexts(contexts)
    assert len(loaded) == 1
    provision(contexts, tmp_path / "second", "--device", "cam-2")
    assert loaded.find_oscore({COSE_KID: b"\x02"}).authenticated_claims == [
        Binding("device", "cam-2")
    ]
    loaded.close()
