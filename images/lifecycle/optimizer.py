"""Optimizing: giving an image waiting in the optimize backlog its final bytes (API.md §10, §14).

The images are those stored by the fast pass (``IMAGES_OPTIMIZE=deferred``)
whose served bytes may still shrink (:mod:`.backlog` holds the claims). How
hard to try is chosen per image by how long it waited (:func:`effort_for`),
against ``IMAGES_OPTIMIZE_LAG_BOUND`` seconds: the full settings while the
backlog keeps up, the quick ones once an image waited a tenth of the bound,
and none past the bound itself: the image is then kept as received. So
under a sustained load that not even the quick settings keep up with, no
image waits much longer than the bound for its final bytes (measured:
docs/performance.md), and idle CPU still buys the best ratio.

Every result is final: ``optimized`` becomes true and the bytes never change
again, so caches may keep them for good (``immutable``, a year's Max-Age).
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.utils import timezone

from images import compression, sources, storage
from images.errors import DomainError
from images.lifecycle.backlog import COMPACT, OPTIMIZE, Claim
from images.services import limits_current
from ops import metrics

logger = logging.getLogger(__name__)


def image_optimize(claim: Claim, *, effort: str = compression.FULL) -> str:
    """Give one claimed image its final bytes; return the result.

    "optimized": its bytes were replaced by a smaller lossless encoding;
    "kept": nothing smaller was found (or the image has used up its
    attempts, or is damaged, or decodes to more than
    ``IMAGES_OPTIMIZE_MAX_PIXEL_BYTES``, which is not tried: the reason is
    kept for ``optimize --status``), so the bytes stay as stored; a JPEG that may
    be held compacted moves on to the compact backlog, its bytes final as
    they are. The row is updated only if it still holds the bytes we read
    (it may have been deleted meanwhile).
    Raises :class:`Unavailable` (and database errors) for an outage: the
    image stays claimed, and is taken again once the lease runs out.
    """
    taken = OPTIMIZE.take(claim)
    if isinstance(taken, str):
        return taken
    image, data = taken
    try:
        form = compression.stored_form(
            data,
            limits_current(),
            effort=effort,
            compact=settings.IMAGES_COMPACT_JPEG and not image.at_rest_form,
            checked=True,  # at ingest
            max_decoded=settings.IMAGES_OPTIMIZE_MAX_PIXEL_BYTES,
        )
    except DomainError:
        form = None  # limits lowered since ingest: keep what is stored
    if form is not None and form.compact_later:
        OPTIMIZE.finish(image, **COMPACT.undone, attempts=0)  # its attempts start anew
        return "kept"
    if form is not None and form.kept:
        OPTIMIZE.finish(image, failure=form.kept)  # for optimize --status (and --retry)
        return "kept"
    stored = None if form is None else form.served
    if stored is None or sources.size(stored.data) >= len(data):
        OPTIMIZE.finish(image)
        return "kept"
    better = sources.read_all(stored.data)
    replaced = storage.image_replace(
        image,
        better,
        **OPTIMIZE.done,
        lease_until=None,
        content_type=stored.content_type,
        stored_size=len(better),
        sha256=sources.sha256(better),
        modified_at=timezone.now(),
    )
    return "optimized" if replaced else "gone"


# The effort past the lag bound: none, the image is kept as received.
SHED = "none"


def effort_for(lag: float) -> str:
    """How hard to try for an image that waited ``lag`` seconds (the one home of this rule).

    FULL while the backlog keeps up; QUICK from a tenth of
    ``IMAGES_OPTIMIZE_LAG_BOUND`` (a backlog is building: QUICK costs about
    half as much, for a ratio within 0.5 % on the corpus, and keeps as
    received a PNG that only FULL's deflate would shrink, so a backlog of
    such PNGs settles here); :data:`SHED` from the bound on, for an image on
    its first attempt.
    """
    bound = settings.IMAGES_OPTIMIZE_LAG_BOUND
    if lag >= bound:
        return SHED
    return compression.QUICK if lag >= bound / 10 else compression.FULL


def image_keep(claim: Claim) -> str:
    """Take a claimed image out of the backlog as received, untried: its bytes are final now."""
    image = OPTIMIZE.claimed(claim)
    if image is None:
        return "gone"
    OPTIMIZE.finish(image)
    return "kept"


def optimize_next() -> str | None:
    """Claim and optimize one waiting image; its result, or ``None`` when none waits.

    An outage (:class:`images.errors.Unavailable`, a database error) is the
    caller's to wait out (:mod:`.backlog`).
    """
    effort = compression.FULL

    def work(claim: Claim) -> str:
        nonlocal effort
        effort = effort_for((timezone.now() - claim.received_at).total_seconds())
        if effort == SHED and claim.attempts > 1:
            # Tried before (a worker died holding it, or ``--retry`` queued
            # it again): not shed for its age, but tried quickly.
            effort = compression.QUICK
        if effort == SHED:
            return image_keep(claim)
        return image_optimize(claim, effort=effort)

    done = OPTIMIZE.run_next(work)
    if done is None:
        return None
    metrics.record_optimized(done[1], effort=effort)
    return done[1]


def optimize_pending(*, batch: int = 10) -> int:
    """Finish up to ``batch`` waiting images; return how many were taken."""
    taken = 0
    while taken < batch and optimize_next() is not None:
        taken += 1
    return taken
