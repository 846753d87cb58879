"""Writes: ingest and delete. Every front end (HTTP, CoAP) calls these.

Where the bytes go is :mod:`images.storage`'s business; the optimizer that
finishes deferred images is :mod:`images.lifecycle.optimizer`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, connection, transaction

from images import compression, delivery, live, sources, storage
from images.errors import ImageConflict, ImageNotFound, ImageTooLarge, InvalidImage
from images.models import Image
from images.thumbnails import thumbnails_forget
from ops import metrics


def limits_current() -> compression.Limits:
    """The operator's limits, read from settings on each call (tests override them)."""
    return compression.Limits(
        max_bytes=settings.IMAGES_MAX_BYTES,
        max_pixels=settings.IMAGES_MAX_PIXELS,
        max_frames=settings.IMAGES_MAX_FRAMES,
        max_jpeg_scans=settings.IMAGES_MAX_JPEG_SCANS,
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
    form = compression.stored_form(
        data,
        limits,
        effort=compression.CHECK if deferred else compression.FULL,
        compact=settings.IMAGES_COMPACT_JPEG,
        # Inline, the full pass runs before the answer: bounded as in the background.
        max_decoded=settings.IMAGES_OPTIMIZE_MAX_PIXEL_BYTES,
    )
    stored = form.served
    final = form.compact_later or not deferred or stored.content_type not in OPTIMIZABLE_TYPES
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
        optimized=final,
        compact_pending=form.compact_later,
    )
    result = _saved(image, stored.data, sha256=original_sha256)
    if result.created:
        metrics.record_upload(
            original_size=image.original_size, stored_size=image.at_rest_size, created=True
        )
    return result


def image_import(
    *,
    device_id: str,
    timestamp: datetime,
    data: sources.Source,
    expected_sha256: str | None = None,
    original_size: int | None = None,
) -> IngestResult:
    """Store an image exactly as exported elsewhere: checked, not optimized again (API.md §11).

    Its bytes must decode, be a format served as it is (PNG, JPEG, GIF,
    WebP) and, when ``expected_sha256`` is given, have that hash. Idempotent
    like :func:`image_ingest`: the same bytes again are ``created=False``,
    other bytes :class:`ImageConflict`. The stored bytes are final
    (``optimized``): another pass would change the sha256 its export names.
    """
    limits = limits_current()
    size = sources.size(data)
    sha256 = sources.sha256(data)
    if expected_sha256 is not None and sha256 != expected_sha256:
        raise InvalidImage("the image's bytes do not have the sha256 its metadata names")
    existing = _image_at(device_id, timestamp)
    if existing is not None:
        return _retried(existing, sha256)
    info = compression.probe(data, limits)
    if info.content_type not in STORED_AS_RECEIVED:
        raise InvalidImage(
            f"{info.content_type} is not stored as it is; import PNG, JPEG, GIF or WebP"
        )
    checked = compression.compress(data, limits, effort=compression.CHECK)  # every frame decodes
    image = Image(
        device_id=device_id,
        timestamp=timestamp,
        content_type=checked.content_type,
        width=checked.width,
        height=checked.height,
        original_size=max(original_size or 0, size),
        stored_size=size,
        sha256=sha256,
        original_sha256=sha256,
        optimized=True,
    )
    return _saved(image, data, sha256=sha256)


def _saved(image: Image, data: sources.Source, *, sha256: str) -> IngestResult:
    """Store a new image; one stored meanwhile at its key (a race) answers as a retry would."""
    try:
        storage.image_save(image, data, also=lambda: _told(image))
    except IntegrityError:
        existing = _image_at(image.device_id, image.timestamp)
        if existing is None:
            raise
        return _retried(existing, sha256)
    return IngestResult(image, created=True)


def _told(image: Image) -> None:
    """In the transaction that stores ``image``: its event, for watchers and for receivers."""
    delivery.image_stored(live.image_stored(image))


def _image_at(device_id: str, timestamp: datetime) -> Image | None:
    return Image.objects.defer("data").filter(device_id=device_id, timestamp=timestamp).first()


def _retried(existing: Image, original_sha256: str) -> IngestResult:
    if original_sha256 in (existing.original_sha256, existing.sha256):
        return IngestResult(existing, created=False)
    raise ImageConflict(
        f"device {existing.device_id!r} already stored a different image at this timestamp",
        field="timestamp",
    )


# The formats kept in their own format (BMP and TIFF become PNG).
STORED_AS_RECEIVED = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})

# What the full pass can still shrink after a fast one (GIF and WebP are
# stored as received either way).
OPTIMIZABLE_TYPES = frozenset({"image/png", "image/jpeg"})


def image_delete(*, image_id: uuid.UUID | str) -> None:
    """Delete one image, its row and then its bytes; :class:`ImageNotFound` when there is none."""
    try:
        key = uuid.UUID(str(image_id))
    except ValueError:
        raise ImageNotFound("no image with this id") from None
    if not images_delete(ids=[key]):
        raise ImageNotFound("no image with this id")


@dataclass(frozen=True)
class Deleted:
    image_id: uuid.UUID
    location: str
    sha256: str


def images_delete(
    *, ids: list[uuid.UUID], received_before: datetime | None = None
) -> list[Deleted]:
    """Delete these images (those received before ``received_before``, if given); what went.

    The rows go in one short transaction; their bytes (objects) and cached
    thumbnails once it commits. ``DELETE ... RETURNING`` (SQLite 3.35+,
    PostgreSQL) names exactly the rows deleted and where their bytes were at
    that moment, so an image replaced by the optimizer meanwhile loses its
    current object, not a former one.
    """
    if not ids:
        return []
    table = connection.ops.quote_name(Image._meta.db_table)
    keys = [Image._meta.pk.get_db_prep_value(key, connection) for key in ids]
    sql = f"DELETE FROM {table} WHERE id IN ({', '.join(['%s'] * len(keys))})"
    params: list[object] = list(keys)
    if received_before is not None:
        sql += " AND received_at <= %s"
        params.append(
            Image._meta.get_field("received_at").get_db_prep_value(received_before, connection)
        )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"{sql} RETURNING id, location, sha256, device_id, timestamp", params)
        rows = cursor.fetchall()
        deleted = [Deleted(uuid.UUID(str(row[0])), row[1], row[2]) for row in rows]
        delivery.images_deleted(
            (item.image_id, row[3], row[4]) for item, row in zip(deleted, rows, strict=True)
        )
        storage.objects_forget([item.location for item in deleted])
        transaction.on_commit(lambda: thumbnails_forget(item.sha256 for item in deleted))
    return deleted
