"""Which images retention removes (API.md §11, §16): the plan a prune carries out.

Each device by its bounds (:mod:`images.lifecycle.policies`): first the images
received (``receivedAt``) more than ``retention_days`` ago; then, of the
rest, the oldest by ``timestamp`` (the device's own order, as
``max_images`` has always kept the newest by it) while more than
``max_images`` remain or their Σ ``atRestSize`` exceeds ``max_bytes``. Then,
across every device, the oldest by ``receivedAt`` while the installation's
Σ ``atRestSize`` exceeds IMAGES_RETENTION_MAX_BYTES: the service's clock,
since devices' clocks cannot be compared (a camera stuck in 1970 would
otherwise always go first). Images received after the prune began are
neither counted nor removed.

A fleet of 10,000 devices and millions of images costs one grouped read of
what each device holds (from the ``image_device_held`` index alone), an
indexed range per 250 devices for age, and, only for a device over a bound
or an installation over its own, an indexed walk that reads about what goes.
Age alone, without a policy, is one range of the ``received_at`` index.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Q, QuerySet, Sum

from images.lifecycle.policies import GLOBAL, Bounds, Policies
from images.models import Image

# The source of what goes for IMAGES_RETENTION_MAX_BYTES (the others': a
# policy's pattern, or policies.GLOBAL).
INSTALLATION = "IMAGES_RETENTION_MAX_BYTES"
PAGE = 250


@dataclass(frozen=True, slots=True)
class Expired:
    """An image a bound removes, with what a report says of it."""

    id: uuid.UUID
    device_id: str
    timestamp: datetime
    received_at: datetime
    at_rest_size: int


COLUMNS = ("id", "device_id", "timestamp", "received_at", "at_rest_size")


def expired(*, started_at: datetime, policies: Policies) -> dict[str, list[Expired]]:
    """What goes, by the source of the bound that removes it, oldest first; every source of
    ``policies`` is a key (empty when nothing goes), and INSTALLATION when its bound is set."""
    limit = settings.IMAGES_RETENTION_MAX_BYTES
    if not len(policies) and not policies.default.max_images and not limit:
        # Age alone, the same for every device (API.md §11 as it was): one
        # range of the received_at index, and nothing read per device.
        return {GLOBAL: _received_before(policies.default.retention_days, started_at)}
    held = _held(started_at)
    bounds = {device: policies.governing(device) for device in held}
    aged = _aged(bounds, started_at)
    plan: dict[str, list[Expired]] = {source: [] for source in policies.sources()}
    for device, (count, size) in held.items():
        gone = aged.get(device, [])
        rest = (count - len(gone), size - sum(image.at_rest_size for image in gone))
        skip = {image.id for image in gone}
        gone += _over(device, bounds[device], rest, skip, started_at)
        plan[bounds[device].source] += gone
    for images in plan.values():
        images.sort(key=lambda image: (image.timestamp, image.device_id))
    if limit:
        planned = [image for images in plan.values() for image in images]
        left = sum(size for _, size in held.values()) - sum(i.at_rest_size for i in planned)
        plan[INSTALLATION] = _over_installation(left - limit, {i.id for i in planned}, started_at)
    return plan


def _held(started_at: datetime) -> dict[str, tuple[int, int]]:
    """Each device's count and Σ at_rest_size of the images received by ``started_at``.

    The grouped read covers every row but from the index alone; it cannot
    filter on received_at (not in that index), so the few images received
    since are read apart, by their own index, and taken off.
    """
    every = _grouped(Image.objects.all())
    for device, (count, size) in _grouped(Image.objects.filter(received_at__gt=started_at)).items():
        every_count, every_size = every.get(device, (0, 0))
        every[device] = (max(every_count - count, 0), max(every_size - size, 0))
    return every


def _grouped(images: QuerySet[Image]) -> dict[str, tuple[int, int]]:
    rows = images.order_by().values("device_id").annotate(n=Count("*"), size=Sum("at_rest_size"))
    return {row["device_id"]: (row["n"], row["size"] or 0) for row in rows}


def _received_before(days: int, started_at: datetime) -> list[Expired]:
    """Every image received more than ``days`` before ``started_at``, oldest first."""
    cutoff = _cutoff(days, started_at)
    if cutoff is None:
        return []
    images = list(_walk(Image.objects.filter(received_at__lt=cutoff), "received_at"))
    images.sort(key=lambda image: (image.timestamp, image.device_id))
    return images


def _cutoff(days: int, started_at: datetime) -> datetime | None:
    """``days`` before ``started_at``; None for no bound (0) or one before any datetime."""
    try:
        return started_at - timedelta(days=days) if days else None
    except OverflowError:
        return None  # before the first datetime: nothing was received then


def _aged(bounds: dict[str, Bounds], started_at: datetime) -> dict[str, list[Expired]]:
    """Each device's images received more than its ``retention_days`` before ``started_at``."""
    devices_by_days: dict[int, list[str]] = defaultdict(list)
    for device, device_bounds in bounds.items():
        if device_bounds.retention_days:
            devices_by_days[device_bounds.retention_days].append(device)
    aged: dict[str, list[Expired]] = defaultdict(list)
    for days, devices in devices_by_days.items():
        cutoff = _cutoff(days, started_at)
        if cutoff is None:
            continue
        for start in range(0, len(devices), PAGE):
            # One range of the (device_id, received_at) index per device.
            chunk = devices[start : start + PAGE]
            rows = Image.objects.filter(device_id__in=chunk, received_at__lt=cutoff)
            for image in _rows(rows.order_by()):
                aged[image.device_id].append(image)
    return aged


def _over(
    device: str, bounds: Bounds, held: tuple[int, int], skip: set[uuid.UUID], started_at: datetime
) -> list[Expired]:
    """The device's oldest images by timestamp, besides those in ``skip``, while it holds
    more than its bounds allow (``held``: the count and Σ at_rest_size of the others)."""
    count, size = held
    extra_images = count - bounds.max_images if bounds.max_images else 0
    extra_bytes = size - bounds.max_bytes if bounds.max_bytes else 0
    gone: list[Expired] = []
    if extra_images <= 0 and extra_bytes <= 0:
        return gone
    oldest = Image.objects.filter(device_id=device, received_at__lte=started_at)
    for image in _walk(oldest, "timestamp"):
        if image.id in skip:
            continue
        gone.append(image)
        extra_images -= 1
        extra_bytes -= image.at_rest_size
        if extra_images <= 0 and extra_bytes <= 0:
            break
    return gone


def _over_installation(extra: int, skip: set[uuid.UUID], started_at: datetime) -> list[Expired]:
    """The oldest images by receivedAt, not in ``skip``, until ``extra`` bytes have gone."""
    gone: list[Expired] = []
    if extra <= 0:
        return gone
    for image in _walk(Image.objects.filter(received_at__lte=started_at), "received_at"):
        if image.id in skip:
            continue
        gone.append(image)
        extra -= image.at_rest_size
        if extra <= 0:
            break
    return gone


def _walk(images: QuerySet[Image], order: str) -> Iterator[Expired]:
    """``images`` in ``order`` (then id, unless ``order`` is "timestamp", unique within a
    device: the (device_id, timestamp) index's own order), a page at a time (an index
    walk in which each page starts where the last ended; no long-held cursor)."""
    tie = () if order == "timestamp" else ("id",)
    after: Expired | None = None
    while True:
        page_query = images.order_by(order, *tie)
        if after is not None:
            mark = getattr(after, order)
            later = Q(**{f"{order}__gt": mark})
            if tie:
                later |= Q(**{order: mark, "id__gt": after.id})
            # The >= is the index range; the rest a filter within it.
            page_query = page_query.filter(later, **{f"{order}__gte": mark})
        page = list(_rows(page_query[:PAGE]))
        yield from page
        if len(page) < PAGE:
            return
        after = page[-1]


def _rows(images: QuerySet[Image]) -> Iterator[Expired]:
    for row in images.values_list(*COLUMNS):
        yield Expired(*row)
