"""Who may do what, and how often: the one place that decides (API.md §6, §11).

Every front end turns what a request proved into a :class:`Principal` (HTTP:
a bearer token or a staff session; CoAP: the OSCORE context's binding; the
gallery: the session) and asks the rules here. ``settings.IMAGES_AUTH``
picks the mode: ``open`` (the default, as the original prototype: anyone may
do anything) or ``token`` (every rule applies):

- **read** (downloads, metadata, listings, thumbnails): a reader or a
  staff user, everything; a device, its own images only (API.md §15: a
  stolen camera exposes nothing else);
- **upload**: the device itself, as its own ``deviceId``;
- **delete**: a staff user, or the image's own device (a device may take
  back what it sent; readers never delete);
- **export** (a device's images at once): a staff user, a reader, or that
  device itself;
- **watch** (a device's ``latest`` image and its live events): a staff
  user, a reader, or that device itself; the events of every device need a
  reader or staff.

Upload rates, in both modes when set (on by default in token mode): per
device (``IMAGES_RATE_DEVICE``) and per client address
(``IMAGES_RATE_CLIENT``), counted by :mod:`ops.ratelimit` in the shared cache,
so HTTP and CoAP uploads of one device draw on one budget.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache

from images.errors import Forbidden, RateLimited, Unauthenticated
from images.models import Image
from ops.ratelimit import parse_rate, rate_hit

DEVICE = "device"
READER = "reader"
STAFF = "staff"


@dataclass(frozen=True)
class Principal:
    """Whom a request proved to be: a device or a reader (named by ``subject``), staff, nobody."""

    kind: str | None = None
    subject: str = ""

    @property
    def anonymous(self) -> bool:
        return self.kind is None


ANONYMOUS = Principal()


def rules_apply() -> bool:
    """True in token mode (``IMAGES_AUTH=token``); read per request, tests override it."""
    return settings.IMAGES_AUTH == "token"


def may_read(principal: Principal, device_id: str | None = None) -> bool:
    """Reads of ``device_id``'s images (``None``: whether the principal may read at all)."""
    if not rules_apply() or principal.kind in (STAFF, READER):
        return True
    if principal.kind != DEVICE:
        return False
    return device_id is None or may_upload(principal, device_id)


def read_check(principal: Principal, device_id: str) -> None:
    """401 or 403 unless ``principal`` may read ``device_id``'s images."""
    require(
        may_read(principal, device_id),
        principal,
        "a device token reads only its own device's images",
    )


def visible_device(principal: Principal) -> str | None:
    """The one device whose images ``principal`` may list (a device's own); ``None``: every one."""
    if rules_apply() and principal.kind == DEVICE:
        return principal.subject
    return None


def may_read_every_device(principal: Principal) -> bool:
    """The gallery's rule (API.md §8): anyone in open mode; a reader or staff in token mode."""
    return not rules_apply() or principal.kind in (STAFF, READER)


def may_upload(principal: Principal, device_id: str | None = None) -> bool:
    """The device itself, as ``device_id``.

    ``None`` asks before the device is known (before the body is read):
    whether the principal is a device at all.
    """
    if not rules_apply():
        return True
    if principal.kind != DEVICE:
        return False
    if device_id is None:
        return True
    # Constant time: the comparison says nothing about how close a guess was.
    return hmac.compare_digest(principal.subject.encode(), device_id.encode())


def may_delete(principal: Principal, device_id: str | None = None) -> bool:
    """Staff, or the image's own device (``None``: any device)."""
    return principal.kind == STAFF or may_upload(principal, device_id)


def may_export(principal: Principal, device_id: str) -> bool:
    """Staff, a reader, or that device itself."""
    return principal.kind in (STAFF, READER) or may_upload(principal, device_id)


def may_watch(principal: Principal, device_id: str | None) -> bool:
    """Live views (``latest``, events): staff, a reader, or the device (``None``: every device)."""
    if principal.kind in (STAFF, READER) or not rules_apply():
        return True
    return device_id is not None and may_upload(principal, device_id)


def require(allowed: bool, principal: Principal, refusal: str) -> None:
    """The one refusal of every front end: nothing when ``allowed``; else 401 or 403.

    :class:`Unauthenticated` (401, with the challenge) when ``principal``
    proved nothing, :class:`Forbidden` (403, saying ``refusal``) when what
    it proved is not enough.
    """
    if allowed:
        return
    if principal.anonymous:
        raise Unauthenticated("this request needs credentials")
    raise Forbidden(refusal)


# How long answers may be reused (API.md §3, §10, §13): the one place that says.
# A year is what RFC 9111 §5.2.2.1 suggests as the longest lifetime.
YEAR_SECONDS = 31_536_000
# Thumbnails: a day in caches, then a cheap revalidation by ETag (an id's
# thumbnails never change meaning, but a newer Pillow may encode other bytes).
THUMBNAIL_SECONDS = 86_400


def image_lifetime(image: Image, *, by_id: bool) -> tuple[int, bool]:
    """How many seconds a download of ``image`` may be reused, and whether it is immutable.

    By id, an image whose bytes are final (``optimized``) never changes:
    a year, immutable. Anything else (by device and timestamp, or bytes the
    optimizer will still replace once) for ``IMAGES_CACHE_MAX_AGE``.
    """
    if by_id and image.optimized:
        return YEAR_SECONDS, True
    return settings.IMAGES_CACHE_MAX_AGE, False


def cache_control(max_age: int | None, *, immutable: bool = False) -> str:
    """The ``Cache-Control`` of an answer: ``max_age`` seconds, or ``None``: revalidate each time.

    ``public`` or ``private`` as :func:`cache_visibility` says.
    """
    if max_age is None:
        return f"{cache_visibility()}, no-cache"
    return f"{cache_visibility()}, max-age={max_age}" + (", immutable" if immutable else "")


def cache_visibility() -> str:
    """``public`` in open mode; ``private`` in token mode.

    RFC 9111 §3.5: ``public`` would let a shared cache hand an answer to an
    authorised request to anyone; ``private`` keeps it in the client's cache.
    """
    return "private" if rules_apply() else "public"


def upload_rate_check(*, device_id: str | None = None, client: str | None = None) -> None:
    """Count one upload against the device's and/or the client's rate; :class:`RateLimited` past it.

    A refused upload is not counted, so a client that waits as told gets
    through.
    """
    if client is not None:
        wait = _rate_wait("upload-client", client, settings.IMAGES_RATE_CLIENT)
        if wait is not None:
            raise RateLimited(f"too many uploads from {client}", retry_after=wait)
    if device_id is not None:
        wait = _rate_wait("upload-device", device_id, settings.IMAGES_RATE_DEVICE)
        if wait is not None:
            raise RateLimited(f"too many uploads from device {device_id!r}", retry_after=wait)


def _rate_wait(scope: str, identity: str, setting: str) -> int | None:
    rate = parse_rate(setting)
    if rate is None:
        return None
    return rate_hit(cache, scope=scope, identity=identity, rate=rate)
