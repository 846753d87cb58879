"""API.md §16 webhooks: what receivers answer, in every framing HTTP/1.1 allows, or never.

The deliverer writes its requests and parses the answers itself, on one event
loop for every receiver (images/delivery/posting.py). The receivers here are
raw sockets that answer from a script, byte for byte, so each framing a real
server may use is sent exactly; the service is ``runserver`` with a 1 s
webhook timeout.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conftest import LiveServer, start_runserver, stop, wait_until
from images.tests.test_webhooks import Receiving, add, failing_beside, receiver_state, upload

NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"


class Scripted:
    """A receiver on a raw socket: each POST gets the next answer of ``answers`` (then 204).

    An answer ending in ``None`` closes the connection after it is written;
    ``hang=True`` reads requests and never answers.
    """

    def __init__(
        self,
        answers: list[bytes | tuple[bytes, None]],
        *,
        hang: bool = False,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.answers = list(answers)
        self.hang = hang
        self.tls = tls
        self.bodies: list[bytes] = []
        self.connections = 0
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.listener.getsockname()[1]}/hook"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        if self.tls is not None:
            try:
                connection = self.tls.wrap_socket(connection, server_side=True)
            except OSError:  # the client refused our certificate
                connection.close()
                return
        reader = connection.makefile("rb")
        with connection, reader:
            while True:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = reader.readline()
                    if not line:
                        return
                    head += line
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                body = reader.read(length)
                if self.hang:
                    continue
                with self.lock:
                    self.bodies.append(body)
                    answer = self.answers.pop(0) if self.answers else NO_CONTENT
                if isinstance(answer, tuple):
                    connection.sendall(answer[0])
                    return
                connection.sendall(answer)

    def close(self) -> None:
        self.listener.close()


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    signer: ec.EllipticCurvePrivateKey,
) -> x509.Certificate:
    """A CA's certificate (``issuer`` None), or a server's for 127.0.0.1 (strict X.509)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    if issuer is None:
        usage = dict(digital_signature=False, key_cert_sign=True, crl_sign=True)
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    else:
        usage = dict(digital_signature=True, key_cert_sign=False, crl_sign=False)
        builder = (
            builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key()), False
            )
        )
    builder = builder.add_extension(
        x509.KeyUsage(
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            encipher_only=False,
            decipher_only=False,
            **usage,
        ),
        critical=True,
    )
    return builder.sign(signer, hashes.SHA256())


def tls_server(directory: Path, name: str) -> tuple[ssl.SSLContext, Path]:
    """A receiver's TLS context, its certificate issued by a CA of its own; and that CA's file."""
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _certificate(f"{name} CA", ca_key, None, ca_key)
    certificate = _certificate("127.0.0.1", key, ca, ca_key)
    pem = serialization.Encoding.PEM
    (directory / f"{name}-ca.pem").write_bytes(ca.public_bytes(pem))
    (directory / f"{name}.pem").write_bytes(
        certificate.public_bytes(pem)
        + key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / f"{name}.pem")
    return context, directory / f"{name}-ca.pem"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[ssl.SSLContext, Path]]:
    directory = tmp_path_factory.mktemp("tls")
    return {name: tls_server(directory, name) for name in ("trusted", "unknown")}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tls) -> Iterator[LiveServer]:
    env = {"IMAGES_WEBHOOK_TIMEOUT": "1", "SSL_CERT_FILE": str(tls["trusted"][1])}
    live = start_runserver(tmp_path_factory.mktemp("answers"), env)
    yield live
    stop(live.process)


def test_every_framing_of_an_answer_is_understood(server):
    receiver = Scripted(
        [
            # An interim answer first, then the final one.
            b"HTTP/1.1 100 Continue\r\n\r\n" + NO_CONTENT,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nthank\r\n3\r\nyou\r\n0\r\n\r\n",
            # A body that ends with the connection.
            (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nthanks", None),
            b"HTTP/1.1 503 Busy\r\nRetry-After: 1\r\nContent-Length: 4\r\n\r\nbusy",
            b"HTTP/1.1 200 OK\r\nContent-Length: 70000\r\n\r\n" + b"x" * 70000,
            (b"this is not HTTP\r\n\r\n", None),
        ]
    )
    try:
        key, _ = add(server, receiver.url)
        ids = [upload(server, "framing-1")["id"] for _ in range(6)]
        # Six events, two of them sent twice: the one answered 503, the one answered garbage.
        wait_until(lambda: len(receiver.bodies) == 8, timeout=20)
        posted = [body.decode() for body in receiver.bodies]
        sent = [next(i for i in ids if i in body) for body in posted]
        assert sent == [ids[0], ids[1], ids[2], ids[3], ids[3], ids[4], ids[4], ids[5]]
        wait_until(lambda: receiver_state(server, key)["attempts"] == 0)
        # Kept alive across the first two; a new connection after each close,
        # after the garbage, and after the 70 KB body (closed, not drained).
        assert receiver.connections == 4
    finally:
        receiver.close()
        server.query("DELETE FROM images_receiver")


def test_a_receiver_that_never_answers_is_timed_out_and_delays_no_other(server):
    silent = Scripted([], hang=True)
    alive = Receiving()
    try:
        # All five reach the live receiver while the silent one holds its first.
        key = failing_beside(server, silent.url, alive, "silent-1")
        assert "no answer within 1 s" in receiver_state(server, key)["last_error"]
    finally:
        silent.close()
        alive.close()
        server.query("DELETE FROM images_receiver")


def test_an_https_receiver_is_verified(server, tls):
    trusted = Scripted([], tls=tls["trusted"][0])
    unknown = Scripted([], tls=tls["unknown"][0])  # its CA is not one the service trusts
    try:
        add(server, trusted.url)
        refused, _ = add(server, unknown.url)
        image = upload(server, "tls-1")
        wait_until(lambda: len(trusted.bodies) == 1)
        assert image["id"] in trusted.bodies[0].decode()
        wait_until(lambda: receiver_state(server, refused)["failing_since"] is not None)
        assert "CERTIFICATE_VERIFY_FAILED" in receiver_state(server, refused)["last_error"]
        assert unknown.bodies == []
    finally:
        trusted.close()
        unknown.close()
        server.query("DELETE FROM images_receiver")
