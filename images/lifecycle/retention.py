"""Retention: keep only what the operator wants kept (API.md §11).

``IMAGES_RETENTION_DAYS`` deletes images received more than that many days
ago; ``IMAGES_RETENTION_MAX_PER_DEVICE`` keeps each device's newest images by
``timestamp`` and deletes the rest. Both are off (0) by default.

A prune goes the way of ``DELETE`` (:func:`images.services.images_delete`:
rows, then bytes and cached thumbnails), in batches, each its own short
transaction: 250 rows on PostgreSQL, whose row locks let uploads go on; 100
on SQLite, with a pause after each so that a waiting upload gets the single
writer's lock in between. It never touches an image received after it began: every
delete names that instant. This is what EdgeX's core-data retention does,
but exact and per device.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone

from images.models import Image
from images.services import Deleted, images_delete
from ops import metrics

BATCH = 250
SQLITE_BATCH = 100
SQLITE_PAUSE_SECONDS = 0.12


@dataclass
class PruneReport:
    started_at: datetime
    deleted: list[Deleted] = field(default_factory=list)
    would_delete: list[uuid.UUID] = field(default_factory=list)


def retention_enabled() -> bool:
    return bool(settings.IMAGES_RETENTION_DAYS or settings.IMAGES_RETENTION_MAX_PER_DEVICE)


def images_prune(*, dry_run: bool = False, batch: int = BATCH) -> PruneReport:
    """Apply the retention settings now; with ``dry_run``, only say which images would go."""
    report = PruneReport(started_at=timezone.now())
    sqlite = connection.vendor == "sqlite"
    for ids in _batches(_expired(report.started_at), SQLITE_BATCH if sqlite else batch):
        if dry_run:
            report.would_delete.extend(ids)
            continue
        deleted = images_delete(ids=ids, received_before=report.started_at)
        report.deleted.extend(deleted)
        metrics.record_pruned(len(deleted))
        if sqlite:
            # SQLite has one writer at a time, and a waiting upload retries
            # on a growing sleep (up to 100 ms): batches back to back left it
            # waiting for seconds (bench/lifecycle/ measured p99 3.3 s
            # while 50,000 images went). A pause longer than that sleep gives
            # it the lock between batches.
            time.sleep(SQLITE_PAUSE_SECONDS)
    return report


def _expired(started_at: datetime) -> Iterator[uuid.UUID]:
    """The ids of the images the settings say go, among those received by ``started_at``."""
    days = settings.IMAGES_RETENTION_DAYS
    if days:
        cutoff = started_at - timedelta(days=days)
        yield from _ids(Image.objects.filter(received_at__lt=cutoff))
    keep = settings.IMAGES_RETENTION_MAX_PER_DEVICE
    if keep:
        for device_id in _devices():
            # The newest ``keep`` by timestamp stay: the (device_id,
            # timestamp) index gives the oldest one that stays directly.
            newest = Image.objects.filter(device_id=device_id).order_by("-timestamp")
            boundary = newest.values_list("timestamp", flat=True)[keep - 1 : keep].first()
            if boundary is not None:
                older = Image.objects.filter(
                    device_id=device_id, timestamp__lt=boundary, received_at__lte=started_at
                )
                yield from _ids(older)


def _devices() -> Iterator[str]:
    """Every device id, in order, a page at a time (walks the unique index)."""
    after = ""
    while True:
        page = list(
            Image.objects.filter(device_id__gt=after)
            .order_by("device_id")
            .values_list("device_id", flat=True)
            .distinct()[:BATCH]
        )
        yield from page
        if len(page) < BATCH:
            return
        after = page[-1]


def _ids(queryset: QuerySet[Image]) -> Iterator[uuid.UUID]:
    """The ids of ``queryset``'s images, read a page at a time by id (no long-held cursor)."""
    after: uuid.UUID | None = None
    while True:
        page_query = queryset.order_by("id")
        if after is not None:
            page_query = page_query.filter(id__gt=after)
        page = list(page_query.values_list("id", flat=True)[:BATCH])
        yield from page
        if len(page) < BATCH:
            return
        after = page[-1]


def _batches(ids: Iterator[uuid.UUID], size: int) -> Iterator[list[uuid.UUID]]:
    chunk: list[uuid.UUID] = []
    for image_id in ids:
        chunk.append(image_id)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
