"""Writes: ingest and delete. Every front end (HTTP, CoAP) calls these."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import BinaryField, Func, Value
from django.utils import timezone

from images import compression, pgbinary, sources
from images.errors import ImageConflict, ImageNotFound, ImageTooLarge, InvalidInput
from images.models import Image
from ops import metrics


def limits_current() -> compression.Limits:
    """The operator's limits, read from settings on each call (tests override them)."""
    return compression.Limits(
        max_bytes=settings.IMAGES_MAX_BYTES,
        max_pixels=settings.IMAGES_MAX_PIXELS,
        max_frames=settings.IMAGES_MAX_FRAMES,
    )


@dataclass(frozen=True)
class IngestResult:
    image: Image
    created: bool


def image_ingest(*, device_id: str, timestamp: datetime, data: sources.Source) -> IngestResult:
    """Check, compress losslessly and store an image.

    Idempotent per ``(device_id, timestamp)``: the same bytes again return the
    stored image with ``created=False``; different bytes raise
    :class:`ImageConflict` and leave the stored image untouched. The database's
    unique constraint decides races between concurrent uploads.
    """
    limits = limits_current()
    original_size = sources.size(data)
    if original_size > limits.max_bytes:
        raise ImageTooLarge(
            f"image is {original_size} bytes; the limit is {limits.max_bytes}",
            limit=limits.max_bytes,
        )
    original_sha256 = sources.sha256(data)
    existing = _image_at(device_id, timestamp)
    if existing is not None:
        return _retried(existing, original_sha256)

    deferred = settings.IMAGES_OPTIMIZE == "deferred"
    stored = compression.compress(data, limits, fast=deferred)
    image = Image(
        device_id=device_id,
        timestamp=timestamp,
        content_type=stored.content_type,
        width=stored.width,
        height=stored.height,
        original_size=original_size,
        stored_size=sources.size(stored.data),
        sha256=original_sha256 if stored.data is data else sources.sha256(stored.data),
        original_sha256=original_sha256,
        optimized=not deferred or stored.content_type not in OPTIMIZABLE_TYPES,
    )
    try:
        with transaction.atomic():
            _insert(image, stored.data)
    except IntegrityError:
        existing = _image_at(device_id, timestamp)
        if existing is None:
            raise
        return _retried(existing, original_sha256)
    metrics.record_upload(
        original_size=image.original_size, stored_size=image.stored_size, created=True
    )
    return IngestResult(image, created=True)


# SQLite copies a bound blob twice on the way into a row (the binding and the
# record): 59 MiB of peak memory for a 30 MB image, where writing it into a
# zeroblob() placeholder piece by piece costs 2 MiB (measured).
_BLOB_PIECE_BYTES = 1 << 20


def _insert(image: Image, data: sources.Source) -> None:
    """INSERT ``image`` holding ``data``; a large image's bytes are written apart.

    SQLite: into a ``zeroblob()`` placeholder, in pieces. PostgreSQL: with one
    UPDATE in the same transaction that sends them in binary (see
    :mod:`images.pgbinary`). Afterwards ``image.data`` is either the bytes or
    deferred (read on access).
    """
    size = image.stored_size
    if size <= _BLOB_PIECE_BYTES or connection.vendor not in ("sqlite", "postgresql"):
        image.data = sources.read_all(data)
        image.save(force_insert=True)
        return
    table = connection.ops.quote_name(Image._meta.db_table)
    key = Image._meta.pk.get_db_prep_value(image.id, connection)
    if connection.vendor == "postgresql":
        image.data = b""
        image.save(force_insert=True)
        pgbinary.execute(
            connection, f"UPDATE {table} SET data = %b WHERE id = %s", [sources.read_all(data), key]
        )
    else:
        image.data = Func(Value(size), function="zeroblob", output_field=BinaryField())
        image.save(force_insert=True)
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT rowid FROM {table} WHERE id = %s", [key])
            (rowid,) = cursor.fetchone()
        column = Image._meta.get_field("data").column
        with connection.connection.blobopen(Image._meta.db_table, column, rowid) as blob:
            for piece in sources.pieces(data, _BLOB_PIECE_BYTES):
                blob.write(piece)
    del image.data  # deferred: not in memory


def _image_at(device_id: str, timestamp: datetime) -> Image | None:
    return Image.objects.defer("data").filter(device_id=device_id, timestamp=timestamp).first()


def _retried(existing: Image, original_sha256: str) -> IngestResult:
    if original_sha256 in (existing.original_sha256, existing.sha256):
        return IngestResult(existing, created=False)
    raise ImageConflict(
        f"device {existing.device_id!r} already stored a different image at this timestamp",
        field="timestamp",
    )


# What the full pass can still shrink after a fast one (GIF and WebP are
# stored as received either way).
OPTIMIZABLE_TYPES = frozenset({"image/png", "image/jpeg"})


def image_optimize_pending(*, batch: int = 10) -> int:
    """Give up to ``batch`` fast-stored images their full optimisation; return how many.

    The row is replaced only if it still holds the bytes we optimised (it
    may have been deleted meanwhile), so this can run beside ingest, in any
    number of processes, at any time.
    """
    pending = list(
        Image.objects.filter(optimized=False)
        .order_by("received_at")
        .values_list("id", flat=True)[:batch]
    )
    for image_id in pending:
        image_optimize(image_id=image_id)
    return len(pending)


def image_optimize(*, image_id: uuid.UUID) -> None:
    """The full lossless optimisation of one stored image (see :func:`image_optimize_pending`)."""
    row = Image.objects.filter(id=image_id).values_list("sha256", "data").first()
    if row is None:
        return
    old_sha256, data = row[0], bytes(row[1])
    try:
        stored = compression.compress(data, limits_current())
    except (InvalidInput, ImageTooLarge):
        stored = None  # limits lowered since ingest: keep what is stored
    update: dict[str, object] = {"optimized": True}
    if stored is not None and len(stored.data) < len(data):
        update |= {
            "data": stored.data,
            "content_type": stored.content_type,
            "stored_size": len(stored.data),
            "sha256": hashlib.sha256(stored.data).hexdigest(),
            "modified_at": timezone.now(),
        }
    Image.objects.filter(id=image_id, sha256=old_sha256).update(**update)


def image_delete(*, image_id: uuid.UUID | str) -> None:
    """Delete one image; :class:`ImageNotFound` when there is none."""
    deleted, _ = Image.objects.filter(id=image_id).delete()
    if not deleted:
        raise ImageNotFound("no image with this id")
