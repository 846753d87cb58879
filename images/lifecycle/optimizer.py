"""The optimizer's backlog: images stored by the fast pass, waiting for the full one (API.md §10).

Any number of workers, on any number of machines, may share one database.
A worker *claims* the oldest waiting image by writing a lease on its row
(``lease_until``) and counting the attempt (``attempts``); no other worker
takes it while the lease holds. On PostgreSQL the claim is
``SELECT ... FOR UPDATE SKIP LOCKED`` inside the claiming transaction, so
concurrent workers pass over each other's rows instead of queueing on them;
on SQLite the claim is a conditional UPDATE (SQLite runs one writer at a
time, which makes it just as exclusive). A worker that dies holds its image
until the lease runs out (``IMAGES_OPTIMIZE_LEASE``); then another takes it
over. An image that has used up its attempts (``IMAGES_OPTIMIZE_ATTEMPTS``)
without being finished, for instance because it kills the worker each time,
is kept as received and marked done.

How hard to try is chosen per image by the backlog's lag: the quick
settings while the image claimed waited longer than
``IMAGES_OPTIMIZE_LAG_BOUND`` seconds, the full ones otherwise. So under a
sustained load that the full settings cannot keep up with, the backlog stays
bounded, and idle CPU still buys the best ratio.

Either result is final: ``optimized`` becomes true and the bytes never change
again, so caches may keep them for good (``immutable``, a year's Max-Age).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Count, F, Min, Q
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily

from images import compression, sources, storage
from images.errors import DomainError, ImageDamaged, Unavailable
from images.models import Image
from images.services import limits_current
from ops import metrics

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claim:
    """An image this worker holds until ``lease_until``."""

    image_id: uuid.UUID
    received_at: datetime
    attempts: int


@dataclass(frozen=True)
class Backlog:
    waiting: int
    oldest: datetime | None

    def lag_seconds(self, now: datetime) -> float:
        return 0.0 if self.oldest is None else max(0.0, (now - self.oldest).total_seconds())


def backlog_status() -> Backlog:
    """How many images wait and since when (one scan of the partial index of waiting rows)."""
    row = Image.objects.filter(optimized=False).aggregate(
        waiting=Count("id"), oldest=Min("received_at")
    )
    return Backlog(row["waiting"], row["oldest"])


class BacklogCollector:
    """``images_optimize_backlog`` and ``images_optimize_lag_seconds``, read from the database.

    The backlog is shared by every worker of every instance, so it is
    counted where it lives when ``/metrics`` is read (one scan of a small
    partial index), not added up from what each process saw.
    """

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            backlog = backlog_status()
        except DatabaseError:
            return  # /healthz says so; the other metrics still answer
        yield GaugeMetricFamily(
            "images_optimize_backlog", "Images waiting for the optimizer", value=backlog.waiting
        )
        yield GaugeMetricFamily(
            "images_optimize_lag_seconds",
            "Age of the oldest image waiting for the optimizer",
            value=backlog.lag_seconds(timezone.now()),
        )


def backlog_claim(*, now: datetime | None = None) -> Claim | None:
    """Claim the oldest waiting image that no live lease holds; ``None`` when there is none."""
    now = now or timezone.now()
    lease_until = now + timedelta(seconds=settings.IMAGES_OPTIMIZE_LEASE)
    claimable = (
        Image.objects.filter(optimized=False)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .order_by("received_at")
    )
    if connection.features.has_select_for_update_skip_locked:
        with transaction.atomic():
            row = (
                claimable.select_for_update(skip_locked=True)
                .values_list("id", "received_at", "attempts")
                .first()
            )
            if row is None:
                return None
            Image.objects.filter(id=row[0]).update(
                lease_until=lease_until, attempts=F("attempts") + 1
            )
            return Claim(row[0], row[1], row[2] + 1)
    # SQLite: every candidate may have been claimed by another worker
    # between our read and our write; the write's condition settles it.
    for image_id, received_at, attempts in claimable.values_list("id", "received_at", "attempts")[
        :8
    ]:
        claimed = claimable.filter(id=image_id, attempts=attempts).update(
            lease_until=lease_until, attempts=F("attempts") + 1
        )
        if claimed:
            return Claim(image_id, received_at, attempts + 1)
    return None


def image_optimize(claim: Claim, *, effort: str = compression.FULL) -> str:
    """Give one claimed image its final bytes; return the result.

    "compacted": a JPEG (or MPO) is held as JPEG XL from which it is rebuilt
    bit for bit (API.md §12); "optimized": its bytes were replaced by a
    smaller lossless encoding; "kept": nothing smaller was found (or the
    image has used up its attempts), so the bytes stay as stored. The row is updated only if it
    still holds the bytes we read (it may have been deleted meanwhile).
    Raises :class:`Unavailable` (and database errors) for an outage: the
    image stays claimed, and is taken again once the lease runs out.
    """
    image = Image.objects.defer("data").filter(id=claim.image_id, optimized=False).first()
    if image is None:
        return "gone"
    done: dict[str, object] = {"optimized": True, "lease_until": None}
    if claim.attempts > settings.IMAGES_OPTIMIZE_ATTEMPTS:
        logger.warning("image %s: kept as received after %d attempts", image.id, claim.attempts)
        _finish(image, done)
        return "kept"
    try:
        data = storage.image_bytes(image)
    except ImageDamaged:
        _finish(image, done)  # nothing to improve on; checkstorage names it
        return "kept"
    try:
        form = compression.stored_form(
            data,
            limits_current(),
            effort=effort,
            compact=settings.IMAGES_COMPACT_JPEG and not image.at_rest_form,
            checked=True,  # at ingest
        )
    except DomainError:
        form = None  # limits lowered since ingest: keep what is stored
    if form is not None and form.at_rest is not None:
        # The served bytes stay the upload's own (same sha256 and ETag).
        at_rest = form.at_rest
        replaced = storage.image_replace(image, at_rest.data, at_rest_form=at_rest.form, **done)
        return "compacted" if replaced else "gone"
    stored = None if form is None else form.served
    if stored is None or sources.size(stored.data) >= len(data):
        _finish(image, done)
        return "kept"
    better = sources.read_all(stored.data)
    replaced = storage.image_replace(
        image,
        better,
        **done,
        content_type=stored.content_type,
        stored_size=len(better),
        sha256=sources.sha256(better),
        modified_at=timezone.now(),
    )
    return "optimized" if replaced else "gone"


def _finish(image: Image, done: dict[str, object]) -> None:
    Image.objects.filter(id=image.id, sha256=image.sha256).update(**done)


def optimize_next() -> str | None:
    """Claim and finish one waiting image; its result, or ``None`` when none waits.

    Failures of the image itself are caught here: the image is released for
    another attempt (and kept as received once its attempts are used up).
    An outage (:class:`Unavailable`, a database error) is the caller's to
    wait out.
    """
    now = timezone.now()
    claim = backlog_claim(now=now)
    if claim is None:
        return None
    lagging = (now - claim.received_at).total_seconds() > settings.IMAGES_OPTIMIZE_LAG_BOUND
    effort = compression.QUICK if lagging else compression.FULL
    try:
        result = image_optimize(claim, effort=effort)
    except Unavailable:
        _release(claim)  # the store failed, not the image: let it be taken again soon
        raise
    except Exception:  # noqa: BLE001 - one bad image must not stop the backlog
        if _is_outage():
            raise
        logger.exception(
            "image %s: optimization failed (attempt %d)", claim.image_id, claim.attempts
        )
        _release(claim)
        result = "failed"
    metrics.record_optimized(result, effort=effort)
    return result


def _release(claim: Claim) -> None:
    try:
        Image.objects.filter(id=claim.image_id).update(lease_until=None)
    except Exception:  # noqa: BLE001 - the lease runs out by itself
        logger.warning("image %s: could not release its lease", claim.image_id)


def _is_outage() -> bool:
    """Whether the database still answers (a failure caused by the image leaves it answering)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return False
    except Exception:  # noqa: BLE001 - any failure to answer is an outage
        return True


def optimize_pending(*, batch: int = 10) -> int:
    """Finish up to ``batch`` waiting images; return how many were taken."""
    taken = 0
    while taken < batch and optimize_next() is not None:
        taken += 1
    return taken


def compact_next(*, after: uuid.UUID | None = None) -> tuple[uuid.UUID, str] | None:
    """Hold the next finished JPEG (by id, after ``after``) that is not yet compacted as JPEG XL.

    For images stored before compaction existed (``optimize --compact``):
    their served bytes stay exactly as they are (same sha256 and ETag), only
    what is held at rest changes, and only after the rebuild is checked.
    Resumable: compacted images are skipped, so an interrupted run goes on
    where it stopped. Returns the image's id and the result ("compacted",
    "kept": not compactable or not smaller, "gone"), or ``None`` when done.
    """
    waiting = Image.objects.defer("data").filter(
        content_type="image/jpeg", at_rest_form="", optimized=True
    )
    if after is not None:
        waiting = waiting.filter(id__gt=after)
    image = waiting.order_by("id").first()
    if image is None:
        return None
    at_rest = compression.compact(storage.image_bytes(image), image.content_type)
    if at_rest is None:
        return image.id, "kept"
    replaced = storage.image_replace(image, at_rest.data, at_rest_form=at_rest.form)
    return image.id, "compacted" if replaced else "gone"
