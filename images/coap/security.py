"""OSCORE (RFC 8613) for token mode: provisioned contexts, their bindings, access rules.

In token mode (``IMAGES_AUTH=token``) a CoAP client proves who it is by
protecting its requests with an OSCORE security context that the operator
provisioned for it (``manage.py coapcontext``) and bound to one device or
reader. Each context is a directory under ``COAP_OSCORE_DIR``, named after the
client's Sender ID (the ``kid`` its requests carry, RFC 8613 §6.1), in the
format of aiocoap's ``FilesystemSecurityContext`` plus the binding::

    COAP_OSCORE_DIR/01/settings.json  Sender ID (the server's), Recipient ID, algorithm
                      /secret.json    Master Secret and Master Salt (mode 0600)
                      /binding.json   {"device": "cam-1"} or {"reader": "dashboard"}
                      /sequence.json  sequence number and replay window (kept by aiocoap)
                      /lock           held while runcoap uses the context

The client gets the mirror image (the two IDs swapped) in a directory of its
own, with an aiocoap ``credentials.json`` that points to it. Revoking a context
removes its directory; a running ``runcoap`` follows the directory as it
changes (:class:`ServerContexts`), so neither provisioning nor revoking needs
a restart.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

from aiocoap import Message, error
from aiocoap.credentials import CredentialsMap
from aiocoap.oscore import COSE_KID, COSE_KID_CONTEXT, FilesystemSecurityContext

from images.access import DEVICE, READER, Principal

log = logging.getLogger(__name__)

ALGORITHM = "AES-CCM-16-64-128"  # RFC 8613 §3.2.1: the mandatory-to-implement AEAD
KDF_HASH = "sha256"  # HKDF SHA-256, RFC 8613 §3.2.1's default
# Every context has its own Master Secret, so the server can use one Sender
# ID in all of them (RFC 8613 §3.3 asks for uniqueness per Master Secret).
SERVER_ID = b""
# RFC 8613 §5.2: an ID is at most the nonce length (13 bytes for AES-CCM-16-64-128) minus 6.
MAX_ID_BYTES = 7
MASTER_SECRET_BYTES = 32
# RFC 8613 §3.1 recommends a salt; random per context, like the secret.
MASTER_SALT_BYTES = 8
# A change to the contexts directory within this long of reading it could
# leave its timestamp unchanged (file system timestamps are coarse), so the
# listing is read again until it is older than that ("racily clean" in git).
RACY_NS = 1_000_000_000


@dataclass(frozen=True)
class Binding(Principal):
    """Whom a security context belongs to: a device or a reader (API.md §6).

    What each may do is :mod:`images.access`'s to say.
    """

    def __str__(self) -> str:
        return f"{self.kind} {self.subject!r}"


@dataclass(frozen=True)
class Provisioned:
    """A new context: its ``kid``, and where the server's and the client's halves went."""

    sender_id: bytes
    server_dir: Path
    client_dir: Path
    credentials: Path


def context_provision(
    *, contexts_dir: Path, binding: Binding, client_dir: Path, uri: str
) -> Provisioned:
    """Create a security context bound to ``binding``.

    The server's half goes to ``contexts_dir`` under the lowest free Sender
    ID, the client's to ``client_dir`` (which must not exist) together with
    a ``credentials.json`` that applies it to requests matching ``uri``
    (an aiocoap credentials pattern such as ``coap://images.example/*``).
    Raises ``FileExistsError`` when ``client_dir`` exists.
    """
    secret = {
        "secret_hex": secrets.token_bytes(MASTER_SECRET_BYTES).hex(),
        "salt_hex": secrets.token_bytes(MASTER_SALT_BYTES).hex(),
    }
    client_dir.mkdir(mode=0o700)
    try:
        contexts_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Built aside and renamed into place, so that a running server never
        # sees half a context, and two provisionings never share a Sender ID.
        staging = Path(tempfile.mkdtemp(prefix=".new-", dir=contexts_dir))
        try:
            _write_json(staging / "secret.json", secret, secret=True)
            _write_json(staging / "binding.json", {binding.kind: binding.subject})
            sender_id = _claim_id(staging, contexts_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _write_json(client_dir / "secret.json", secret, secret=True)
        _write_json(client_dir / "settings.json", _settings(sender_id, SERVER_ID))
        # A directory name ending in "/" is what aiocoap's examples use for basedir.
        credentials = {uri: {"oscore": {"basedir": f"{client_dir.resolve()}/"}}}
        _write_json(client_dir / "credentials.json", credentials)
    except BaseException:
        shutil.rmtree(client_dir, ignore_errors=True)
        raise
    return Provisioned(
        sender_id=sender_id,
        server_dir=contexts_dir / sender_id.hex(),
        client_dir=client_dir,
        credentials=client_dir / "credentials.json",
    )


def context_revoke(*, contexts_dir: Path, binding: Binding) -> list[bytes]:
    """Remove every context bound to ``binding``; their Sender IDs (none: nothing matched)."""
    revoked = []
    for sender_id, bound in contexts_list(contexts_dir):
        if bound != binding:
            continue
        # Renamed away first: one atomic step after which the server no longer
        # finds it, whatever it may still be writing inside.
        doomed = Path(tempfile.mkdtemp(prefix=".revoked-", dir=contexts_dir))
        os.replace(contexts_dir / sender_id.hex(), doomed / "context")
        shutil.rmtree(doomed, ignore_errors=True)
        revoked.append(sender_id)
    return revoked


def contexts_list(contexts_dir: Path) -> list[tuple[bytes, Binding]]:
    """The provisioned contexts by Sender ID (the client's), with their bindings."""
    found = []
    for name in sorted(_context_names(contexts_dir)):
        try:
            found.append((bytes.fromhex(name), binding_read(contexts_dir / name)))
        except (OSError, ValueError) as exc:
            log.warning("skipping %s: %s", contexts_dir / name, exc)
    return found


def binding_read(context_dir: Path) -> Binding:
    """The binding recorded in a context directory; ``ValueError`` when it is not one."""
    data = json.loads((context_dir / "binding.json").read_text(encoding="utf-8"))
    if not isinstance(data, dict) or len(data) != 1:
        raise ValueError("binding.json must hold exactly one of 'device' or 'reader'")
    ((kind, subject),) = data.items()
    if kind not in (DEVICE, READER) or not isinstance(subject, str) or not subject:
        raise ValueError("binding.json must map 'device' or 'reader' to a name")
    return Binding(kind, subject)


def client_binding(request: Message) -> Binding | None:
    """The binding of the OSCORE context ``request`` came through; None for a plain request.

    Only ``OscoreSiteWrapper`` puts claims on a request's remote, after it
    verified the request with that context.
    """
    claims = request.remote.authenticated_claims
    return next((claim for claim in claims if isinstance(claim, Binding)), None)


@dataclass(frozen=True)
class Access:
    """Who may use the image resources over CoAP (API.md §6).

    Open mode: anyone. Token mode (``oscore_required``): the image
    resources need a request protected by a provisioned context (bound to a
    device or a reader); what that binding may do is :mod:`images.access`'s
    to say. Discovery stays open either way.
    """

    oscore_required: bool

    def authenticate(self, request: Message) -> Binding | None:
        """The request's binding; 4.01 when one is required and the request has none."""
        binding = client_binding(request)
        if binding is None and self.oscore_required:
            raise error.Unauthorized(
                "protect this request with the OSCORE context (RFC 8613) provisioned for you"
            )
        return binding


class ServerContexts(CredentialsMap):
    """The server's contexts, for ``OscoreSiteWrapper``, following ``contexts_dir``.

    Each context carries its :class:`Binding` as its ``authenticated_claims``,
    which requests protected with it show as ``request.remote.authenticated_claims``.
    Contexts are found by the ``kid`` of the request (RFC 8613 §6.1); the
    directory is read again whenever its listing changes (one ``stat`` per
    OSCORE request tells), so contexts provisioned or revoked while the
    server runs take effect with the next request. aiocoap keeps each
    context's replay window and sequence number in its directory.
    """

    def __init__(self, contexts_dir: Path) -> None:
        super().__init__()
        self._dir = contexts_dir
        self._by_kid: dict[bytes, FilesystemSecurityContext] = {}
        self._failed: set[str] = set()
        self._stamp: tuple[int, int, int] | None = None
        self.refresh()

    def find_oscore(self, unprotected: dict[Any, Any]) -> FilesystemSecurityContext:
        """The context for a request's unprotected header; ``KeyError`` when none (4.01)."""
        self.refresh()
        if unprotected.get(COSE_KID_CONTEXT) is not None:
            raise KeyError("no context here has an ID Context")
        return self._by_kid[unprotected.get(COSE_KID)]

    def refresh(self) -> None:
        """Load contexts added to the directory and drop those removed from it."""
        try:
            status = os.stat(self._dir)
        except FileNotFoundError:
            status = None
        stamp = None if status is None else (status.st_ino, status.st_mtime_ns, status.st_nlink)
        if stamp is not None and stamp == self._stamp:
            return
        names = _context_names(self._dir)
        for name in self._loaded() - names:
            self._forget(name)
        for name in sorted(names - self._loaded() - self._failed):
            self._load(name)
        self._failed &= names
        racy = status is None or time.time_ns() - status.st_mtime_ns < RACY_NS
        self._stamp = None if racy else stamp

    def close(self) -> None:
        """Let go of every context; aiocoap then saves its state and unlocks it."""
        self._by_kid.clear()
        self.clear()

    def _loaded(self) -> set[str]:
        return {label.removeprefix(":") for label in self}

    def _load(self, name: str) -> None:
        path = self._dir / name
        try:
            binding = binding_read(path)
            context = FilesystemSecurityContext(str(path))
        except (OSError, ValueError) as exc:  # filelock's Timeout is an OSError
            log.error("OSCORE context %s not loaded: %s", path, exc)
            self._failed.add(name)
            return
        if context.recipient_id in self._by_kid:
            log.error("OSCORE context %s not loaded: its Recipient ID is used already", path)
            _unlock(context)
            self._failed.add(name)
            return
        context.authenticated_claims = [binding]
        self[":" + name] = context
        self._by_kid[context.recipient_id] = context
        log.info("OSCORE context %s loaded, bound to %s", name, binding)

    def _forget(self, name: str) -> None:
        context = self.pop(":" + name)
        del self._by_kid[context.recipient_id]
        # Its directory is gone (revoked): nothing to save its state to.
        _unlock(context)
        log.info("OSCORE context %s dropped (revoked)", name)


def _unlock(context: FilesystemSecurityContext) -> None:
    """Release a context's lock without saving its state (aiocoap would on deletion)."""
    lock, context.lockfile = context.lockfile, None
    if lock is not None:
        lock.release(force=True)


def _context_names(contexts_dir: Path) -> set[str]:
    """Directory names that are Sender IDs in hex (not the dot-named work in progress)."""
    try:
        entries = list(os.scandir(contexts_dir))
    except FileNotFoundError:
        return set()
    return {entry.name for entry in entries if entry.is_dir() and _is_id(entry.name)}


def _is_id(name: str) -> bool:
    try:
        return name == bytes.fromhex(name).hex() and len(name) <= 2 * MAX_ID_BYTES
    except ValueError:
        return False


def _free_ids(contexts_dir: Path) -> Iterator[bytes]:
    """Unused Sender IDs, shortest first: each byte counts on a constrained link."""
    used = _context_names(contexts_dir)
    for number in count(1):
        sender_id = number.to_bytes((number.bit_length() + 7) // 8, "big")
        if len(sender_id) > MAX_ID_BYTES:
            return
        if sender_id.hex() not in used:
            yield sender_id


def _claim_id(staging: Path, contexts_dir: Path) -> bytes:
    """Move ``staging`` into place under a free Sender ID, written into its settings first."""
    for sender_id in _free_ids(contexts_dir):
        settings = staging / "settings.json"
        settings.unlink(missing_ok=True)
        _write_json(settings, _settings(SERVER_ID, sender_id))
        try:
            # Fails if another provisioning took the name in the meantime.
            os.rename(staging, contexts_dir / sender_id.hex())
        except OSError:
            continue
        return sender_id
    raise OSError(f"no free OSCORE Sender ID of at most {MAX_ID_BYTES} bytes in {contexts_dir}")


def _settings(sender_id: bytes, recipient_id: bytes) -> dict[str, str]:
    return {
        "sender-id_hex": sender_id.hex(),
        "recipient-id_hex": recipient_id.hex(),
        "algorithm": ALGORITHM,
        "kdf-hashfun": KDF_HASH,
    }


def _write_json(path: Path, data: Any, *, secret: bool = False) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if secret else 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=2)
        out.write("\n")
