"""The stored image: metadata and bytes in one row.

``(device_id, timestamp)`` is unique in the database, which is what makes a
retried upload idempotent under concurrency; the constraint's index also
serves lookups and per-device listings in time order.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone


class Image(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    device_id = models.CharField(max_length=100)
    timestamp = models.DateTimeField()
    content_type = models.CharField(max_length=40)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    original_size = models.PositiveBigIntegerField()
    stored_size = models.PositiveBigIntegerField()
    # Of the stored bytes: the ETag, and what clients can verify downloads with.
    sha256 = models.CharField(max_length=64)
    # Of the received bytes: recognises a device's retry without recompressing.
    original_sha256 = models.CharField(max_length=64)
    received_at = models.DateTimeField(default=timezone.now)
    # When the stored bytes last changed (Last-Modified): at ingest, and again
    # when deferred optimization replaces them (IMAGES_OPTIMIZE=deferred).
    modified_at = models.DateTimeField(default=timezone.now)
    # False while a better encoding may still replace the stored bytes.
    optimized = models.BooleanField(default=True)
    # True while what is held may still shrink without changing the served
    # bytes (a JPEG waiting to be compacted as JPEG XL, API.md §14).
    compact_pending = models.BooleanField(default=False)
    # Why background work kept the image as it is, after failing ("" when it
    # did not fail): ``optimize --status`` lists these, ``--retry`` clears them.
    failure = models.CharField(max_length=200, blank=True, default="")
    # A background worker's claim on a waiting image (images.lifecycle.backlog):
    # until when the worker that claimed it holds it, and how many claims it has
    # had. An image waits in one backlog at a time (optimizing, then compacting).
    lease_until = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    # What the database or the store holds for the image (API.md §12): its
    # size, and the lossless form it is kept in ("" for the served bytes
    # themselves; "jxl" or "jxl-parts": JPEG XL from which the served JPEG is
    # rebuilt bit for bit, images.compression.jxl).
    at_rest_size = models.PositiveBigIntegerField(default=0)
    at_rest_form = models.CharField(max_length=16, blank=True, default="")
    # Where the bytes are (images.storage, the only module that reads these
    # two): "" for this row's ``data``, else "s3://bucket/key" and ``data``
    # is empty. Last, so that listings (which defer ``data``) never touch the
    # blob's pages.
    location = models.CharField(max_length=1100, blank=True, default="")
    data = models.BinaryField(default=b"")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["device_id", "timestamp"], name="image_device_timestamp_unique"
            )
        ]
        indexes = [
            # The deferred optimizer's queue: small, since rows leave it.
            models.Index(
                fields=["received_at"],
                condition=models.Q(optimized=False),
                name="image_pending_optimization",
            ),
            # The compactor's: as small, for the same reason.
            models.Index(
                fields=["received_at"],
                condition=models.Q(compact_pending=True),
                name="image_pending_compaction",
            ),
            # Event replays after Last-Event-ID (API.md §15: an indexed range
            # read, whatever the table's size), of every device and of one;
            # retention by age reads the first too.
            models.Index(fields=["received_at", "id"], name="image_received"),
            models.Index(fields=["device_id", "received_at", "id"], name="image_device_received"),
            # What each device holds (count and Σ at_rest_size), read by
            # retention's byte bounds from the index alone, never the rows.
            models.Index(
                fields=["device_id", "timestamp", "at_rest_size"], name="image_device_held"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.device_id}@{self.timestamp.isoformat()}"

    @property
    def href(self) -> str:
        return f"/collections/images/{self.id}"


class Token(models.Model):
    """An access token (API.md §6). Only its SHA-256 is stored.

    Tokens are 256 random bits, so a plain hash is enough: there is nothing
    to brute-force, and a database leak reveals no usable token.
    """

    class Kind(models.TextChoices):
        DEVICE = "device", "device"
        READER = "reader", "reader"

    kind = models.CharField(max_length=10, choices=Kind.choices)
    # The device id a device token may upload as, or a reader's name.
    subject = models.CharField(max_length=100)
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.kind} token {self.pk} for {self.subject!r}"


class DevicePolicy(models.Model):
    """Retention for a device or a family of devices, instead of the global settings (API.md §16).

    ``pattern`` is a device id, or a prefix followed by ``*`` (``cam-*``; ``*``
    alone is every device). The most specific pattern governs a device: its
    exact id, else the longest matching prefix (images.lifecycle.policies).
    Each bound is None to inherit the global setting (IMAGES_RETENTION_DAYS,
    IMAGES_RETENTION_MAX_PER_DEVICE, none for bytes), or 0 for no bound at
    all: how an operator keeps one camera's images for ever while the global
    retention is on.
    """

    pattern = models.CharField(max_length=100, unique=True)
    retention_days = models.PositiveIntegerField(null=True, blank=True)
    max_images = models.PositiveIntegerField(null=True, blank=True)
    # Of the device's Σ at_rest_size: what the database or store holds for it.
    max_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"policy {self.pattern}"


# Models of the core's packages, here so that Django finds them with the app's.
from images.delivery.models import OutboxEvent, Receiver  # noqa: E402

__all__ = ["DevicePolicy", "Image", "OutboxEvent", "Receiver", "Token"]
