"""Writes: ingest and delete. Every front end (HTTP, CoAP) calls these."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, transaction

from images import compression
from images.errors import ImageConflict, ImageNotFound, ImageTooLarge
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


def image_ingest(*, device_id: str, timestamp: datetime, data: bytes) -> IngestResult:
    """Check, compress losslessly and store an image.

    Idempotent per ``(device_id, timestamp)``: the same bytes again return the
    stored image with ``created=False``; different bytes raise
    :class:`ImageConflict` and leave the stored image untouched. The database's
    unique constraint decides races between concurrent uploads.
    """
    limits = limits_current()
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(
            f"image is {len(data)} bytes; the limit is {limits.max_bytes}",
            limit=limits.max_bytes,
        )
    original_sha256 = hashlib.sha256(data).hexdigest()
    existing = _image_at(device_id, timestamp)
    if existing is not None:
        return _retried(existing, original_sha256)

    stored = compression.compress(data, limits)
    image = Image(
        device_id=device_id,
        timestamp=timestamp,
        content_type=stored.content_type,
        width=stored.width,
        height=stored.height,
        original_size=len(data),
        stored_size=len(stored.data),
        sha256=hashlib.sha256(stored.data).hexdigest(),
        original_sha256=original_sha256,
        data=stored.data,
    )
    try:
        with transaction.atomic():
            image.save(force_insert=True)
    except IntegrityError:
        existing = _image_at(device_id, timestamp)
        if existing is None:
            raise
        return _retried(existing, original_sha256)
    metrics.record_upload(
        original_size=image.original_size, stored_size=image.stored_size, created=True
    )
    return IngestResult(image, created=True)


def _image_at(device_id: str, timestamp: datetime) -> Image | None:
    return Image.objects.defer("data").filter(device_id=device_id, timestamp=timestamp).first()


def _retried(existing: Image, original_sha256: str) -> IngestResult:
    if original_sha256 in (existing.original_sha256, existing.sha256):
        return IngestResult(existing, created=False)
    raise ImageConflict(
        f"device {existing.device_id!r} already stored a different image at this timestamp",
        field="timestamp",
    )


def image_delete(*, image_id: uuid.UUID | str) -> None:
    """Delete one image; :class:`ImageNotFound` when there is none."""
    deleted, _ = Image.objects.filter(id=image_id).delete()
    if not deleted:
        raise ImageNotFound("no image with this id")
