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

The object store itself (buckets, keys, boto3) is :mod:`images.storage.objects`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import BinaryField, Func, Value

from images import sources
from images.errors import ImageDamaged, StorageUnavailable
from images.models import Image
from images.storage import compacted, pgbinary
from images.storage.cache import BlobCache
from images.storage.objects import (
    KEY_HASH_DIGITS,
    Bucket,
    object_bytes,
    object_delete,
    object_pieces,
    object_put,
    split_location,
    target,
)
from ops import metrics

__all__ = ["Bucket", "split_location", "target"]

logger = logging.getLogger(__name__)

# Images held in up to this many bytes are read whole, with their row (one
# query for a download stored in the database); larger ones are streamed in
# pieces (:func:`reads_whole`).
WHOLE_READ_BYTES = 1 << 20
PIECE_BYTES = 1 << 20
# Served bytes whose size and sha256 were checked (API.md §14), per process,
# under their sha256: readers fetch recent images most, a rebuild from JPEG
# XL costs about 40 ms per MB (bench/compact.py), a store round trip about
# 1 ms of CPU (bench/storage), and the check itself 1 ms per MB. An entry
# is exactly the bytes its key names, so it is never stale.
_checked = BlobCache(settings.IMAGES_STORAGE_CACHE_BYTES)


# --- Writing ------------------------------------------------------------------


def image_save(
    image: Image, data: sources.Source, *, also: Callable[[], object] | None = None
) -> None:
    """INSERT ``image`` holding ``data`` (its served bytes), atomically as far as readers can see.

    In the database: the row holds it (written in pieces when large). In a
    bucket: the object first, then the row; if the row does not commit (a
    race lost to the unique constraint, any error), the object is deleted
    before the exception goes on. ``also`` runs in the row's transaction,
    after the INSERT (what must commit with it: the events). Run outside any
    transaction. A denser form may replace what is held later
    (:func:`image_replace`).
    """
    image.at_rest_size = sources.size(data)
    image.at_rest_form = ""
    bucket = target()
    if bucket is None:
        image.location = ""
        with transaction.atomic():
            _insert_with_bytes(image, data)
            if also is not None:
                also()
        return
    image.location = bucket.location(bucket.key_for(image.id, image.sha256))
    object_put(image.location, data, image.content_type, image.sha256)
    try:
        with transaction.atomic():
            image.data = b""
            image.save(force_insert=True)
            if also is not None:
                also()
    except BaseException:
        object_delete(image.location)
        raise
    del image.data  # deferred: read through this module


def image_replace(image: Image, held: bytes, **fields: Any) -> bool:
    """Replace what ``image`` holds at rest (and set ``fields``) if its row is unchanged since read.

    ``held`` is the new bytes at rest; ``fields`` name what they are
    (``at_rest_form``; and ``sha256``, ``stored_size``... when the served
    bytes change too). False when the row changed or went meanwhile (the new
    bytes are then not kept). Bytes in an object go to a new object beside
    it (same bucket and prefix, their sha256 in its key); moving them
    elsewhere is ``movestorage``'s job.
    """
    fields = {"at_rest_size": len(held), **fields}
    current = Image.objects.filter(
        id=image.id,
        sha256=image.sha256,
        location=image.location,
        at_rest_form=image.at_rest_form,
    )
    if not image.location:
        return bool(current.update(data=held, **fields))
    held_sha256 = hashlib.sha256(held).hexdigest()
    location = image.location[:-KEY_HASH_DIGITS] + held_sha256[:KEY_HASH_DIGITS]
    object_put(location, held, fields.get("content_type", image.content_type), held_sha256)
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
    COPY, in pieces, in the same transaction (see :mod:`images.storage.pgbinary`).
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


def reads_whole(image: Image) -> bool:
    """Whether ``image`` is read whole (:func:`image_bytes`) rather than streamed in pieces.

    The one decision, by what is held: a small image comes whole (with its
    row, from the database), and one held in another form is rebuilt whole
    whatever its size; anything else is streamed.
    """
    return image.at_rest_size <= WHOLE_READ_BYTES or bool(image.at_rest_form)


def whole_read_sql(quote: Callable[[str], str]) -> str:
    """:func:`reads_whole`'s size test as SQL, for a query that reads the bytes with the row."""
    return f"{quote(Image._meta.get_field('at_rest_size').column)} <= {WHOLE_READ_BYTES}"


def image_bytes(image: Image, *, cached: bool = True) -> bytes:
    """The whole served image, checked (downloads that fit in memory, thumbnails, the optimizer).

    What is held is read (an image held in another form at rest is rebuilt
    from it) and compared with the image's ``stored_size`` and ``sha256``
    before anything is returned; a mismatch raises :class:`ImageDamaged`
    (logged and counted). Checked bytes are kept a while in a bounded cache,
    for readers; background work, which reads each image once, passes
    ``cached=False`` and neither looks there nor fills it.
    """
    if not cached:
        return _read_checked(image)
    data = _checked.get(image.sha256)
    if data is None:
        data = _read_checked(image)
        _checked.put(image.sha256, data)
    return data


def image_check(image: Image) -> None:
    """Read what is held for ``image`` (never from a cache) and check it; ImageDamaged if bad.

    ``checkstorage``'s check of one image: a large image is streamed and
    hashed as it comes, never held whole.
    """
    if reads_whole(image):
        _read_checked(image)
        return
    size = image.stored_size
    for _ in _checked_pieces(image, _held_pieces(image, 0, size - 1), size, whole=True):
        pass


def _read_checked(image: Image) -> bytes:
    held = held_bytes(image)
    try:
        data = compacted.rebuilt(image, held) if image.at_rest_form else held
    except ValueError as exc:
        raise _damaged(image, f"its {image.at_rest_form} form does not rebuild ({exc})") from None
    if len(data) != image.stored_size:
        raise _damaged(image, f"{len(data):,} bytes where {image.stored_size:,} were stored")
    if hashlib.sha256(data).hexdigest() != image.sha256:
        raise _damaged(image, "its bytes do not match its sha256")
    return data


def _damaged(image: Image, reason: str) -> ImageDamaged:
    """The error for a damaged image, logged and counted once here (API.md §14)."""
    logger.error("image %s (%s) is damaged: %s", image.id, image.location or "row", reason)
    metrics.record_damaged()
    return ImageDamaged(image.id, reason)


def held_bytes(image: Image) -> bytes:
    """What the database or the store holds for the image, whole."""
    if not image.location and "data" not in image.get_deferred_fields():
        loaded = image.__dict__["data"]
        if loaded is not None:  # the selector leaves large images' bytes unread
            return bytes(loaded)
    size = image.at_rest_size
    small = size <= WHOLE_READ_BYTES
    if image.location and small:
        return object_bytes(image.location, size)
    if not image.location and small:
        row = (
            Image.objects.filter(id=image.id, sha256=image.sha256, at_rest_form=image.at_rest_form)
            .values_list("data")
            .first()
        )
        if row is None:
            raise StorageUnavailable("the image changed while it was read")
        return bytes(row[0])
    return b"".join(_held_pieces(image, 0, size - 1))


def image_pieces(image: Image, first: int = 0, last: int | None = None) -> Iterator[bytes]:
    """Served bytes ``first``..``last`` (inclusive; default: to the end), in pieces as read.

    The store is asked before this returns, so a store that does not answer
    raises :class:`StorageUnavailable` here rather than mid-stream. An image
    held in another form is rebuilt whole first (:func:`image_bytes`).
    """
    last = image.stored_size - 1 if last is None else last
    if last < first:
        return iter(())
    if reads_whole(image):
        with memoryview(image_bytes(image)) as view:
            return iter(
                [
                    bytes(view[start : min(start + PIECE_BYTES, last + 1)])
                    for start in range(first, last + 1, PIECE_BYTES)
                ]
            )
    whole = first == 0 and last == image.stored_size - 1
    return _checked_pieces(image, _held_pieces(image, first, last), last - first + 1, whole)


def _checked_pieces(
    image: Image, pieces: Iterator[bytes], length: int, whole: bool
) -> Iterator[bytes]:
    """``pieces`` as they stream, then their length (and, for the whole image, sha256) checked.

    A streamed image is too large to check before it is sent (API.md §14):
    a mismatch found at its end raises :class:`ImageDamaged` there, which
    cuts the response short of its ``Content-Length``, so a client never
    takes it for the image. A range of a large image is checked for length
    only: its hash covers the whole.
    """
    digest = hashlib.sha256() if whole else None
    count = 0
    for piece in pieces:
        count += len(piece)
        if count > length:
            raise _damaged(image, f"more than the {length:,} bytes asked for")
        if digest is not None:
            digest.update(piece)
        yield piece
    if count != length:
        raise _damaged(image, f"{count:,} bytes where {length:,} were asked for")
    if digest is not None and digest.hexdigest() != image.sha256:
        raise _damaged(image, "its bytes do not match its sha256")


def _held_pieces(image: Image, first: int, last: int) -> Iterator[bytes]:
    if image.location:
        return object_pieces(image.location, first, last)
    key = Image._meta.pk.get_db_prep_value(image.id, connection)
    if connection.vendor == "sqlite":
        blob = connection.connection.blobopen(
            Image._meta.db_table, "data", _rowid(key), readonly=True
        )
        return _blob_pieces(blob, first, last)
    return _substring_pieces(key, image, first, last)


def _blob_pieces(blob: Any, first: int, last: int) -> Iterator[bytes]:
    # SQLite's incremental blob I/O reads only the pages asked for; the
    # handle fails if the row changes meanwhile (the optimizer replaced it).
    with blob:
        blob.seek(first)
        remaining = last - first + 1
        while remaining > 0:
            piece = blob.read(min(PIECE_BYTES, remaining))
            if not piece:
                return
            remaining -= len(piece)
            yield piece


def _substring_pieces(key: Any, image: Image, first: int, last: int) -> Iterator[bytes]:
    # One query a piece; naming what the row held makes a replaced row end
    # the stream rather than mix two versions' bytes.
    table = connection.ops.quote_name(Image._meta.db_table)
    sql = (
        f"SELECT substring(data FROM %s FOR %s) FROM {table}"
        " WHERE id = %s AND sha256 = %s AND at_rest_form = %s"
    )
    position = first
    while position <= last:
        count = min(PIECE_BYTES, last - position + 1)
        params = [position + 1, count, key, image.sha256, image.at_rest_form]
        row = pgbinary.fetch_one(connection, sql, params)
        if row is None or not row[0]:
            raise StorageUnavailable("the image changed while it was read")
        position += len(row[0])
        yield bytes(row[0])
