"""Compacting at rest: holding a JPEG waiting in the compact backlog as JPEG XL (API.md §12, §14).

The served bytes, ``sha256``, ``storedSize`` and ETag never change: they
were final at the upload's answer. Only what the database or the store
holds becomes smaller (``atRestSize``), and only after the compacted form
was rebuilt and compared bit for bit (:func:`images.compression.compact`).
A JPEG the encoder refuses, or whose form would not be smaller, stays held
as received.

Compacting is the work that yields: ``serve``'s workers run it in a thread
at the lowest CPU priority (:mod:`.workers`), so under a sustained load it
waits, the images stay held as received (still bit-exact, still served at
once), and it catches up when the load falls.
"""

from __future__ import annotations

import uuid

from django.utils import timezone

from images import compression, storage
from images.lifecycle.backlog import COMPACT, OPTIMIZE, Claim
from images.lifecycle.optimizer import effort_for
from images.models import Image
from ops import metrics


def image_compact(claim: Claim) -> str:
    """Hold one claimed image compacted; return the result.

    "compacted": held as JPEG XL from now on; "kept": held as it is (the
    encoder refused it, the form was not smaller, the image is damaged or
    has used up its attempts); "gone": deleted or replaced meanwhile.
    Raises :class:`images.errors.Unavailable` (and database errors) for an
    outage: the image stays claimed until its lease runs out.
    """
    taken = COMPACT.take(claim)
    if isinstance(taken, str):
        return taken
    image, data = taken
    at_rest = compression.compact(data, image.content_type)
    if at_rest is None:
        COMPACT.finish(image)
        return "kept"
    replaced = storage.image_replace(
        image, at_rest.data, at_rest_form=at_rest.form, **COMPACT.done, lease_until=None
    )
    return "compacted" if replaced else "gone"


def compact_next() -> str | None:
    """Claim and compact one waiting image; its result, or ``None`` when none waits (or it yields).

    Compacting yields to optimizing: while optimizing is behind (its oldest
    image waited long enough for less than full effort,
    :func:`.optimizer.effort_for`), nothing is compacted, so the CPU goes
    where the served bytes still change.
    """
    lag = OPTIMIZE.status().lag_seconds(timezone.now())
    if effort_for(lag) != compression.FULL:
        return None
    done = COMPACT.run_next(image_compact)
    if done is None:
        return None
    metrics.record_compacted(done[1])
    return done[1]


def compact_earlier(*, after: uuid.UUID | None = None, batch: int = 500) -> uuid.UUID | None:
    """Queue JPEGs stored before compaction existed (``optimize --compact``), a batch at a time.

    Finished JPEGs held as received and not waiting already, in id order
    after ``after``; returns the last id queued, or ``None`` when there are
    no more. The workers (or ``optimize``) then compact them.
    """
    earlier = Image.objects.filter(
        content_type="image/jpeg", at_rest_form="", optimized=True, compact_pending=False
    )
    if after is not None:
        earlier = earlier.filter(id__gt=after)
    ids = list(earlier.order_by("id").values_list("id", flat=True)[:batch])
    if not ids:
        return None
    Image.objects.filter(id__in=ids, at_rest_form="").update(**COMPACT.undone)
    return ids[-1]
