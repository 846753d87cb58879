"""The S3-compatible object store behind :mod:`images.storage`: buckets, keys, objects.

Reached with boto3's client directly rather than through django-storages:
its ``open()`` copies a whole object into a temporary file before the first
byte can be read, and it has no ranged read, while a download needs both
(``bench/storage/`` measured the two against SeaweedFS: a 1 KB range cost
4.9 ms and 4.1 ms of CPU through django-storages, 1.3 ms and 0.8 ms through
boto3; streaming 30 MB grew the process by 65 MiB against nothing).
"""

from __future__ import annotations

import base64
import functools
import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

from django.conf import settings

from images import sources
from images.errors import StorageUnavailable
from images.models import Image

logger = logging.getLogger(__name__)
T = TypeVar("T")

PIECE_BYTES = 1 << 20
_S3 = "s3://"
# S3's bucket naming rules (AWS "Bucket naming rules"; MinIO and SeaweedFS
# follow them).
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IP_ADDRESS = re.compile(r"\d+\.\d+\.\d+\.\d+")
# An object's key ends with this many hex digits of its bytes' sha256.
KEY_HASH_DIGITS = 16


@dataclass(frozen=True)
class Bucket:
    """An ``s3://BUCKET[/PREFIX]`` location: the bucket and the key prefix ("" or "p/")."""

    name: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> Bucket:
        """The bucket and prefix ``url`` names; ValueError saying what is wrong (API.md §15).

        Refused at once rather than failing later as an unreachable store:
        another scheme (``S3://`` included), a port or user info (the store
        is ``S3_ENDPOINT_URL``, its credentials ``AWS_*``; user info would be
        written into every row), a query or fragment, a bucket name S3 does
        not allow, and a prefix too long for the rows' ``location`` column.
        """
        if not url.startswith(_S3):
            raise ValueError(f"not an s3://BUCKET[/PREFIX] location: {url!r}")
        parts = urlsplit(url)
        if parts.query or parts.fragment or "?" in url or "#" in url:
            raise ValueError(f"{url!r}: an s3:// location has no query or fragment")
        if "@" in parts.netloc:
            raise ValueError(f"{url!r}: no user info; credentials go in AWS_ACCESS_KEY_ID/SECRET")
        if ":" in parts.netloc:
            raise ValueError(f"{url!r}: no port; the store's address goes in S3_ENDPOINT_URL")
        name = parts.netloc
        if not _BUCKET_NAME.fullmatch(name) or ".." in name or _IP_ADDRESS.fullmatch(name):
            raise ValueError(
                f"{name!r} is not a bucket name: 3 to 63 lowercase letters, digits, dots and"
                " hyphens, starting and ending with a letter or digit, not an IP address"
            )
        prefix = parts.path.strip("/")
        bucket = cls(name, f"{prefix}/" if prefix else "")
        longest = len(bucket.location(bucket.key_for(uuid.UUID(int=0), "0" * 64)))
        most = Image._meta.get_field("location").max_length
        if most is not None and longest > most:
            raise ValueError(
                f"the prefix is too long: its locations would be {longest} characters,"
                f" more than the {most} a row holds"
            )
        return bucket

    def key_for(self, image_id: object, sha256: str) -> str:
        """The key of an image's bytes whose sha256 is ``sha256``.

        A new key for each version of what is held (the hash names it), so
        that a replacement never overwrites what a row points at.
        """
        return f"{self.prefix}{image_id}-{sha256[:KEY_HASH_DIGITS]}"

    def location(self, key: str) -> str:
        return f"{_S3}{self.name}/{key}"


def target() -> Bucket | None:
    """Where new bytes go: a bucket, or ``None`` for the database."""
    url = settings.IMAGES_STORAGE
    return None if url == "db" else Bucket.parse(url)


def split_location(location: str) -> tuple[str, str]:
    """``s3://bucket/key`` as ``(bucket, key)``."""
    bucket, _, key = location.removeprefix(_S3).partition("/")
    return bucket, key


@functools.cache
def _client_for(endpoint_url: str | None, timeout: int) -> Any:
    """One boto3 client per process and endpoint: clients are thread-safe, sessions are not."""
    import boto3  # only deployments with an object store pay for importing it
    from botocore.config import Config

    config = Config(
        connect_timeout=timeout,
        read_timeout=timeout,
        retries={"max_attempts": 2, "mode": "standard"},
        max_pool_connections=32,
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)


_client_lock = threading.Lock()


def client() -> Any:
    with _client_lock:  # functools.cache may build two clients under a race; harmless but wasteful
        return _client_for(settings.S3_ENDPOINT_URL, settings.S3_TIMEOUT)


def _store_errors() -> tuple[type[Exception], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


def _calling_store(what: str, call: Callable[[], T]) -> T:
    """``call()``, with any failure of the store as :class:`StorageUnavailable`."""
    try:
        return call()
    except _store_errors() as exc:
        logger.warning("object store: %s failed: %s", what, exc)
        raise StorageUnavailable(f"the image store is not available ({what})") from exc


def object_put(location: str, data: sources.Source, content_type: str, sha256: str) -> None:
    """Write an object; the store checks it arrived whole against ``sha256`` (hex) or refuses it.

    (SeaweedFS, for one, does not check the signed payload hash: a body
    damaged on the way would be stored; a wrong ChecksumSHA256 is refused,
    as on AWS. bench/storage/ tried both.)
    """
    bucket, key = split_location(location)
    body: Any = data if isinstance(data, bytes) else sources.as_file(data)
    checksum = base64.b64encode(bytes.fromhex(sha256)).decode("ascii")
    _calling_store(
        "write",
        lambda: client().put_object(
            Bucket=bucket,
            Key=key,
            Body=body,
            ContentType=content_type,
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=checksum,
        ),
    )


def object_delete(location: str) -> None:
    """Delete an object; failures are logged, not raised (checkstorage finds what is left)."""
    bucket, key = split_location(location)
    try:
        client().delete_object(Bucket=bucket, Key=key)
    except _store_errors() as exc:
        logger.warning("object store: could not delete %s: %s", location, exc)


def object_bytes(location: str, size: int) -> bytes:
    """A whole object of ``size`` bytes (its caller checks what came: images.storage)."""
    return b"".join(object_pieces(location, 0, size - 1))


def object_pieces(location: str, first: int, last: int) -> Iterator[bytes]:
    """Bytes ``first``..``last`` (inclusive) of an object, read as it streams."""
    bucket, key = split_location(location)
    answer = _calling_store(
        "read",
        lambda: client().get_object(Bucket=bucket, Key=key, Range=f"bytes={first}-{last}"),
    )
    return _streamed(answer["Body"])


def _streamed(body: Any) -> Iterator[bytes]:
    try:
        while piece := _calling_store("read", lambda: body.read(PIECE_BYTES)):
            yield piece
    finally:
        body.close()


def object_exists(location: str) -> bool:
    """Whether the object is there; :class:`StorageUnavailable` when the store does not say."""
    from botocore.exceptions import ClientError

    bucket, key = split_location(location)
    try:
        client().head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise StorageUnavailable("the image store is not available (check)") from exc
    except _store_errors() as exc:
        raise StorageUnavailable("the image store is not available (check)") from exc
    return True


def object_keys(bucket: str, prefix: str) -> Iterator[tuple[str, datetime]]:
    """Every object under ``prefix`` in ``bucket``: its key and when it was last written."""
    pages = client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    try:
        for page in pages:
            for entry in page.get("Contents", ()):
                yield entry["Key"], entry["LastModified"]
    except _store_errors() as exc:
        raise StorageUnavailable("the image store is not available (list)") from exc


def store_check() -> None:
    """:class:`StorageUnavailable` unless the bucket new images go to answers (healthz)."""
    bucket = target()
    if bucket is not None:
        _calling_store("check", lambda: client().head_bucket(Bucket=bucket.name))
