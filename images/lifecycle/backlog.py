"""The two shared backlogs of background work, and how a worker claims from one (API.md §10, §14).

- **optimize**: images whose served bytes may still change (``optimized``
  false: a PNG, BMP or TIFF stored by the fast pass); :mod:`.optimizer`.
- **compact**: images whose served bytes are final but whose held form may
  still shrink (``compact_pending``: a JPEG waiting to be held as JPEG XL);
  :mod:`.compactor`.

An image waits in at most one of them at a time, so both share the claim
columns. Any number of workers, on any number of machines, may share one
database. A worker *claims* the oldest waiting image by writing a lease on
its row (``lease_until``) and counting the attempt (``attempts``); no
other worker takes it while the lease holds. On PostgreSQL the claim is
``SELECT ... FOR UPDATE SKIP LOCKED`` inside the claiming transaction, so
concurrent workers pass over each other's rows instead of queueing on
them; on SQLite the claim is a conditional UPDATE (SQLite runs one writer
at a time, which makes it just as exclusive). A worker that dies holds its
image until the lease runs out (``IMAGES_OPTIMIZE_LEASE``); then another
takes it over. An image that has used up its attempts
(``IMAGES_OPTIMIZE_ATTEMPTS``), for instance because it kills the worker
each time, is kept as it is, with the reason in ``failure``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Count, F, Min, Q
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily

from images import storage
from images.errors import ImageDamaged, Unavailable
from images.models import Image

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claim:
    """An image this worker holds until its lease runs out."""

    image_id: uuid.UUID
    received_at: datetime
    attempts: int


@dataclass(frozen=True)
class Status:
    waiting: int
    oldest: datetime | None

    def lag_seconds(self, now: datetime) -> float:
        return 0.0 if self.oldest is None else max(0.0, (now - self.oldest).total_seconds())


@dataclass(frozen=True)
class Backlog:
    """One backlog: its name (as in ``/metrics``) and which rows wait in it."""

    name: str
    waiting: Q
    # The row's columns once it leaves the backlog (done, or kept after failing).
    done: dict[str, object]

    @property
    def undone(self) -> dict[str, object]:
        """The columns that put a row (back) in this backlog."""
        return {key: not value for key, value in self.done.items()}

    def status(self) -> Status:
        """How many images wait and since when (one scan of its partial index)."""
        row = Image.objects.filter(self.waiting).aggregate(
            waiting=Count("id"), oldest=Min("received_at")
        )
        return Status(row["waiting"], row["oldest"])

    def claim(self, *, now: datetime | None = None) -> Claim | None:
        """Claim the oldest waiting image that no live lease holds; ``None`` when none waits."""
        now = now or timezone.now()
        lease_until = now + timedelta(seconds=settings.IMAGES_OPTIMIZE_LEASE)
        claimable = (
            Image.objects.filter(self.waiting)
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
        candidates = claimable.values_list("id", "received_at", "attempts")[:8]
        for image_id, received_at, attempts in candidates:
            claimed = claimable.filter(id=image_id, attempts=attempts).update(
                lease_until=lease_until, attempts=F("attempts") + 1
            )
            if claimed:
                return Claim(image_id, received_at, attempts + 1)
        return None

    def finish(self, image: Image, *, failure: str = "", **fields: object) -> None:
        """Take ``image`` out of the backlog as it is (kept), saying why when it failed."""
        fields = {**self.done, "lease_until": None, **fields}
        if failure:
            fields["failure"] = f"{self.name}: {failure}"[:200]
        Image.objects.filter(id=image.id, sha256=image.sha256).update(**fields)

    def run_next(self, work: Callable[[Claim], str]) -> tuple[Claim, str] | None:
        """Claim one image and ``work`` on it; the claim and its result, ``None`` when none waits.

        Failures of the image itself are caught here: the image is released
        for another attempt ("failed"; kept as it is once its attempts are
        used up). An outage (:class:`Unavailable`, a database error) is the
        caller's to wait out.
        """
        claim = self.claim()
        if claim is None:
            return None
        try:
            return claim, work(claim)
        except Unavailable:
            self._release(claim)  # the store failed, not the image: let it be taken again soon
            raise
        except Exception:  # noqa: BLE001 - one bad image must not stop the backlog
            if _is_outage():
                raise
            logger.exception(
                "image %s: %s failed (attempt %d)", claim.image_id, self.name, claim.attempts
            )
            self._release(claim)
            return claim, "failed"

    def _release(self, claim: Claim) -> None:
        try:
            Image.objects.filter(id=claim.image_id).update(lease_until=None)
        except Exception:  # noqa: BLE001 - the lease runs out by itself
            logger.warning("image %s: could not release its lease", claim.image_id)

    def take(self, claim: Claim) -> tuple[Image, bytes] | str:
        """The claimed image and its served bytes (checked), or the result when there is no work.

        "gone": deleted, or out of this backlog meanwhile; "kept": it has used
        up its attempts, or what is held for it is damaged, and it leaves the
        backlog as it is (with the reason, for ``optimize --status``).
        """
        image = self.claimed(claim)
        if image is None:
            return "gone"
        if self._used_up(image, claim):
            return "kept"
        try:
            # Not from the readers' cache: background work reads each image once.
            return image, storage.image_bytes(image, cached=False)
        except ImageDamaged as exc:
            self.finish(image, failure=exc.reason)
            return "kept"

    def claimed(self, claim: Claim) -> Image | None:
        """The claimed image's row (without its bytes), if it is still in this backlog."""
        return Image.objects.defer("data").filter(self.waiting, id=claim.image_id).first()

    def _used_up(self, image: Image, claim: Claim) -> bool:
        """Whether ``image`` has had its attempts; if so it leaves the backlog as it is."""
        if claim.attempts <= settings.IMAGES_OPTIMIZE_ATTEMPTS:
            return False
        logger.warning("image %s: kept as it is after %d attempts", image.id, claim.attempts)
        self.finish(image, failure=f"gave up after {claim.attempts - 1} attempts")
        return True


OPTIMIZE = Backlog("optimize", Q(optimized=False), {"optimized": True})
COMPACT = Backlog("compact", Q(compact_pending=True), {"compact_pending": False})
BACKLOGS = (OPTIMIZE, COMPACT)


def _is_outage() -> bool:
    """Whether the database still answers (a failure caused by the image leaves it answering)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return False
    except Exception:  # noqa: BLE001 - any failure to answer is an outage
        return True


def failed_images() -> list[Image]:
    """The images background work kept as they were after failing, newest first."""
    return list(Image.objects.defer("data").exclude(failure="").order_by("-received_at"))


def images_retry(ids: list[uuid.UUID]) -> int:
    """Queue these failed images again, each in the backlog it failed in; how many were.

    Each counts as tried once, so the optimizer tries it whatever its age
    (:func:`.optimizer.effort_for` sheds only first attempts), with
    ``IMAGES_OPTIMIZE_ATTEMPTS`` - 1 attempts left.
    """
    retried = 0
    for image in Image.objects.defer("data").filter(id__in=ids).exclude(failure=""):
        backlog = OPTIMIZE if image.failure.startswith(f"{OPTIMIZE.name}:") else COMPACT
        retried += Image.objects.filter(id=image.id, failure=image.failure).update(
            failure="", attempts=1, lease_until=None, **backlog.undone
        )
    return retried


class BacklogCollector:
    """``images_{optimize,compact}_backlog`` and ``..._lag_seconds``, read from the database.

    The backlogs are shared by every worker of every instance, so they are
    counted where they live when ``/metrics`` is read (one scan of a small
    partial index each), not added up from what each process saw.
    """

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = timezone.now()
        for backlog in BACKLOGS:
            try:
                status = backlog.status()
            except DatabaseError:
                return  # /healthz says so; the other metrics still answer
            yield GaugeMetricFamily(
                f"images_{backlog.name}_backlog",
                f"Images waiting in the {backlog.name} backlog",
                value=status.waiting,
            )
            yield GaugeMetricFamily(
                f"images_{backlog.name}_lag_seconds",
                f"Age of the oldest image waiting in the {backlog.name} backlog",
                value=status.lag_seconds(now),
            )
