"""Moving image bytes between the database and an object store, and checking them (API.md §10).

``movestorage`` and ``checkstorage`` are thin commands over these. Both work
image by image while the service runs: a move copies the bytes, checks the
copy's sha256, then switches the row with a conditional UPDATE (only if the
row still holds what was copied), so an image replaced or deleted meanwhile
is simply taken again or skipped, and nothing is lost if the move is
interrupted: run it again and it goes on where it stopped.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Q
from django.utils import timezone

from images import storage
from images.errors import ImageDamaged, StorageUnavailable
from images.models import Image
from images.storage import objects

_BATCH = 200


def _rows(query: Q) -> Iterator[Image]:
    """Every image matching ``query``, metadata only, in id order, a batch at a time."""
    after: uuid.UUID | None = None
    while True:
        batch = Image.objects.defer("data").filter(query).order_by("id")
        if after is not None:
            batch = batch.filter(id__gt=after)
        images = list(batch[:_BATCH])
        yield from images
        if len(images) < _BATCH:
            return
        after = images[-1].id


# --- Moving -------------------------------------------------------------------


def images_to_move(destination: str) -> Iterator[Image]:
    """The images whose bytes are not at ``destination`` ("db" or ``s3://...``) yet."""
    if destination == "db":
        return _rows(~Q(location=""))
    bucket = objects.Bucket.parse(destination)
    return _rows(~Q(location__startswith=bucket.location(bucket.prefix)))


def image_move(image: Image, destination: str) -> bool:
    """Copy what one image holds to ``destination``, check it, switch the row, drop the old copy.

    Before: the served bytes (rebuilt, for an compacted image) must have the
    row's sha256. After: the copy is read back and must equal what was
    copied. False when the image changed or went meanwhile (nothing is
    switched; the copy is deleted). :class:`StorageUnavailable` when a check
    fails.
    """
    storage.image_check(image)  # ImageDamaged: nothing damaged is copied
    held = storage.held_bytes(image)
    current = Image.objects.filter(
        id=image.id, sha256=image.sha256, location=image.location, at_rest_form=image.at_rest_form
    )
    if destination == "db":
        moved = bool(current.update(location="", data=held))
        if moved and storage.held_bytes(_reloaded(image)) != held:
            raise StorageUnavailable(f"image {image.id}: the copy in the database differs")
    else:
        bucket = objects.Bucket.parse(destination)
        held_sha256 = hashlib.sha256(held).hexdigest()
        location = bucket.location(bucket.key_for(image.id, held_sha256))
        objects.object_put(location, held, image.content_type, held_sha256)
        if b"".join(objects.object_pieces(location, 0, len(held) - 1)) != held:
            objects.object_delete(location)
            raise StorageUnavailable(f"image {image.id}: the copy in {destination} differs")
        moved = bool(current.update(location=location, data=b""))
        if not moved:
            objects.object_delete(location)
    if moved and image.location:
        objects.object_delete(image.location)
    return moved


def _reloaded(image: Image) -> Image:
    return Image.objects.defer("data").get(id=image.id)


# --- Checking -----------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    image_id: str
    what: str
    location: str
    orphan: bool = False  # an object with no row: the one problem --repair may remove

    def __str__(self) -> str:
        where = f" ({self.location})" if self.location else ""
        return f"image {self.image_id}: {self.what}{where}"


def image_problem(image: Image) -> Problem | None:
    """What is wrong with one image's bytes (read, rebuilt, sized and hashed), or ``None``.

    :class:`StorageUnavailable` when the store does not answer at all.
    """
    try:
        storage.image_check(image)
    except ImageDamaged as exc:
        return Problem(str(image.id), f"damaged: {exc.reason}", image.location)
    except StorageUnavailable:
        if image.location and not objects.object_exists(image.location):
            return Problem(str(image.id), "its object is missing", image.location)
        raise
    return None


def storage_check(*, grace: timedelta, pace: Callable[[], None] | None = None) -> Iterator[Problem]:
    """Every disagreement between rows and bytes: missing or wrong bytes, objects with no row.

    Each row's bytes are read (rebuilt, for a compacted image), sized and
    hashed, never from a cache; ``pace()``, when given, is called before
    each image (``--scrub-rate``). Objects are listed in every
    bucket and prefix that rows point into and in the one new images go to;
    an object younger than ``grace`` may belong to an upload still in
    flight (object first, row next), so it is not judged.
    """
    places: set[tuple[str, str]] = set()
    target = objects.target()
    if target is not None:
        places.add((target.name, target.prefix))
    for image in _rows(Q()):
        if pace is not None:
            pace()
        if image.location:
            bucket, key = objects.split_location(image.location)
            places.add((bucket, key[: key.rfind(str(image.id))]))
        problem = image_problem(image)
        if problem is not None:
            yield problem
    cutoff = timezone.now() - grace
    for bucket, prefix in sorted(places):
        yield from _objects_without_rows(bucket, prefix, cutoff)


def _objects_without_rows(bucket: str, prefix: str, cutoff: datetime) -> Iterator[Problem]:
    for key, modified in objects.object_keys(bucket, prefix):
        location = f"s3://{bucket}/{key}"
        if modified > cutoff or Image.objects.filter(location=location).exists():
            continue
        image_id = key[len(prefix) :].rsplit("-", 1)[0]
        yield Problem(image_id or key, "an object with no row", location, orphan=True)
