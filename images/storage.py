"""Where image bytes live: the only module that knows (API.md §10).

Two places: the image's own database row (``data``, the embedded default)
or an S3-compatible object store. Each row says where its bytes are in
``location`` ("" for the row, ``s3://bucket/key`` for an object), so rows
written before and after a change of ``IMAGES_STORAGE`` are served alike,
and ``movestorage`` can move images one by one while the service runs.
``IMAGES_STORAGE`` decides only where new images go.

An object store is not part of the database's transactions, so every write
keeps this order: the object first, then the row; the row is what makes an
object count, and an object whose row never committed (or was rolled back,
or lost a race) is deleted at once. A crash between the two leaves an object
without a row, which ``checkstorage --repair`` removes; never a row without
its object. Replacing bytes writes a new object under a new key, switches
the row, then deletes the old object. Deleting removes the row, then the
object once the deletion has committed.

The store is reached with boto3's client directly rather than through
django-storages: its ``open()`` copies a whole object into a temporary file
before the first byte can be read, and it has no ranged read, while a
download needs both (bench/storage.py measured the two; docs/deploy.md).
"""

from __future__ import annotations

import base64
import functools
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

from django.conf import settings
from django.db import connection, transaction
from django.db.models import BinaryField, Func, Value

from images import pgbinary, sources
from images.blobcache import BlobCache
from images.errors import StorageUnavailable
from images.models import Image

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Images up to this size are read whole, with their row (one query for a
# download stored in the database); larger ones are streamed in pieces.
WHOLE_READ_BYTES = 1 << 20
PIECE_BYTES = 1 << 20
_S3 = "s3://"
# An object's key ends with this many hex digits of its bytes' sha256.
_KEY_HASH_DIGITS = 16


# --- Where new images go ------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    """An ``s3://BUCKET[/PREFIX]`` location: the bucket and the key prefix ("" or "p/")."""

    name: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> Bucket:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"not an s3://BUCKET[/PREFIX] location: {url!r}")
        prefix = parts.path.strip("/")
        return cls(parts.netloc, f"{prefix}/" if prefix else "")

    def key_for(self, image: Image) -> str:
        # A new key for each version of an image's bytes (the sha256 names
        # it), so that a replacement never overwrites what a row points at.
        return f"{self.prefix}{image.id}-{image.sha256[:_KEY_HASH_DIGITS]}"

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


# --- The object store ---------------------------------------------------------


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
    as on AWS. bench/storage.py tried both.)
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


# Objects never change under their key (a replacement gets a new key), so
# recently read small ones are kept per process; readers fetch recent images
# most, and a store round trip costs about 1 ms of CPU (bench/storage.py).
_recent_objects = BlobCache(settings.IMAGES_STORAGE_CACHE_BYTES)


def _object_bytes(location: str, size: int) -> bytes:
    data = _recent_objects.get(location)
    if data is None:
        data = b"".join(_object_pieces(location, 0, size - 1))
        _recent_objects.put(location, data)
    return data


def _object_pieces(location: str, first: int, last: int) -> Iterator[bytes]:
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


# --- Writing ------------------------------------------------------------------


def image_save(image: Image, data: sources.Source) -> None:
    """INSERT ``image`` and its bytes, atomically as far as readers can see.

    In the database: the row holds them (written in pieces when large). In a
    bucket: the object first, then the row; if the row does not commit
    (a race lost to the unique constraint, any error), the object is deleted
    before the exception goes on. Run outside any transaction.
    """
    bucket = target()
    if bucket is None:
        image.location = ""
        with transaction.atomic():
            _insert_with_bytes(image, data)
        return
    image.location = bucket.location(bucket.key_for(image))
    object_put(image.location, data, image.content_type, image.sha256)
    try:
        image.data = b""
        image.save(force_insert=True)
    except BaseException:
        object_delete(image.location)
        raise
    del image.data  # deferred: read through this module


def image_replace(image: Image, data: bytes, **fields: Any) -> bool:
    """Replace ``image``'s bytes (and set ``fields``) if the row still holds what ``image`` says.

    ``fields`` must include the new ``sha256``. False when the row changed or
    went meanwhile (the new bytes are then not kept). Bytes in an object go
    to a new object beside it (same bucket and prefix, the new sha256 in its
    key); moving them elsewhere is ``movestorage``'s job.
    """
    current = Image.objects.filter(id=image.id, sha256=image.sha256, location=image.location)
    if not image.location:
        return bool(current.update(data=data, **fields))
    location = image.location[:-_KEY_HASH_DIGITS] + fields["sha256"][:_KEY_HASH_DIGITS]
    object_put(location, data, fields.get("content_type", image.content_type), fields["sha256"])
    try:
        replaced = bool(current.update(location=location, **fields))
    except BaseException:
        object_delete(location)
        raise
    object_delete(image.location if replaced else location)
    return replaced


def objects_forget(locations: list[str]) -> None:
    """After their rows are deleted: delete these objects, once the deletion commits.

    ("" is an image whose bytes were in its row: nothing more to delete.)
    """
    locations = [location for location in locations if location]
    if locations:
        transaction.on_commit(lambda: [object_delete(location) for location in locations])


# SQLite copies a bound blob twice on the way into a row (the binding and the
# record): 59 MiB of peak memory for a 30 MB image, where writing it into a
# zeroblob() placeholder piece by piece costs 2 MiB (measured).
def _insert_with_bytes(image: Image, data: sources.Source) -> None:
    """INSERT ``image`` holding ``data``; a large image's bytes are written apart.

    SQLite: into a ``zeroblob()`` placeholder, in pieces. PostgreSQL: by
    COPY, in pieces, in the same transaction (see :mod:`images.pgbinary`).
    Afterwards ``image.data`` is deferred.
    """
    size = sources.size(data)
    if size <= PIECE_BYTES or connection.vendor not in ("sqlite", "postgresql"):
        image.data = sources.read_all(data)
        image.save(force_insert=True)
        del image.data
        return
    table = connection.ops.quote_name(Image._meta.db_table)
    key = Image._meta.pk.get_db_prep_value(image.id, connection)
    if connection.vendor == "postgresql":
        image.data = b""
        image.save(force_insert=True)
        pgbinary.write_bytea_in_pieces(
            connection,
            table=table,
            column=connection.ops.quote_name("data"),
            key=image.id,
            size=size,
            pieces=sources.pieces(data, PIECE_BYTES),
        )
    else:
        image.data = Func(Value(size), function="zeroblob", output_field=BinaryField())
        image.save(force_insert=True)
        with connection.connection.blobopen(Image._meta.db_table, "data", _rowid(key)) as blob:
            for piece in sources.pieces(data, PIECE_BYTES):
                blob.write(piece)
    del image.data


def _rowid(key: Any) -> int:
    table = connection.ops.quote_name(Image._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT rowid FROM {table} WHERE id = %s", [key])
        row = cursor.fetchone()
    if row is None:
        raise StorageUnavailable("the image changed while it was read")
    return row[0]


# --- Reading ------------------------------------------------------------------


def image_bytes(image: Image) -> bytes:
    """The whole stored image (for images that fit in memory: thumbnails, the optimiser)."""
    if not image.location and "data" not in image.get_deferred_fields():
        loaded = image.__dict__["data"]
        if loaded is not None:  # the selector leaves large images' bytes unread
            return bytes(loaded)
    if image.location and image.stored_size <= WHOLE_READ_BYTES:
        return _object_bytes(image.location, image.stored_size)
    if not image.location and image.stored_size <= WHOLE_READ_BYTES:
        row = Image.objects.filter(id=image.id, sha256=image.sha256).values_list("data").first()
        if row is None:
            raise StorageUnavailable("the image changed while it was read")
        return bytes(row[0])
    return b"".join(image_pieces(image))


def image_pieces(image: Image, first: int = 0, last: int | None = None) -> Iterator[bytes]:
    """Bytes ``first``..``last`` (inclusive; default: to the end), in pieces as they are read.

    The store is asked before this returns, so a store that does not answer
    raises :class:`StorageUnavailable` here rather than mid-stream.
    """
    last = image.stored_size - 1 if last is None else last
    if last < first:
        return iter(())
    if image.location:
        return _object_pieces(image.location, first, last)
    return _row_pieces(image, first, last)


def _row_pieces(image: Image, first: int, last: int) -> Iterator[bytes]:
    key = Image._meta.pk.get_db_prep_value(image.id, connection)
    if connection.vendor == "sqlite":
        blob = connection.connection.blobopen(
            Image._meta.db_table, "data", _rowid(key), readonly=True
        )
        return _blob_pieces(blob, first, last)
    return _substring_pieces(key, image.sha256, first, last)


def _blob_pieces(blob: Any, first: int, last: int) -> Iterator[bytes]:
    # SQLite's incremental blob I/O reads only the pages asked for; the
    # handle fails if the row changes meanwhile (the optimiser replaced it).
    with blob:
        blob.seek(first)
        remaining = last - first + 1
        while remaining > 0:
            piece = blob.read(min(PIECE_BYTES, remaining))
            if not piece:
                return
            remaining -= len(piece)
            yield piece


def _substring_pieces(key: Any, sha256: str, first: int, last: int) -> Iterator[bytes]:
    # One query a piece; naming the sha256 makes a replaced row end the
    # stream rather than mix two versions' bytes.
    table = connection.ops.quote_name(Image._meta.db_table)
    sql = f"SELECT substring(data FROM %s FOR %s) FROM {table} WHERE id = %s AND sha256 = %s"
    position = first
    while position <= last:
        count = min(PIECE_BYTES, last - position + 1)
        row = pgbinary.fetch_one(connection, sql, [position + 1, count, key, sha256])
        if row is None or not row[0]:
            raise StorageUnavailable("the image changed while it was read")
        position += len(row[0])
        yield bytes(row[0])
