"""Typed domain errors.

Core code raises these; each front end (HTTP, CoAP) maps them to its wire
status once, at the edge. This module imports nothing from Django, DRF or
aiocoap so the pure compression code can use it too.
"""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


class DomainError(Exception):
    """Base class: ``field`` names the input at fault (or ``"detail"``)."""

    field: str = "detail"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if field is not None:
            self.field = field


class InvalidInput(DomainError):
    """A field is missing or malformed (HTTP 400, CoAP 4.00)."""


class InvalidImage(InvalidInput):
    """The bytes are not a decodable image of a supported format (400)."""

    field = "imageData"


class UnsupportedMediaType(DomainError):
    """The body's media type is not one we accept (415, CoAP 4.15)."""


class ImageTooLarge(DomainError):
    """A size, pixel or frame limit is exceeded (413, CoAP 4.13).

    ``limit`` is the number of bytes the client may send, when that is what
    was exceeded (CoAP sends it back as Size1).
    """

    field = "imageData"

    def __init__(self, message: str, *, field: str | None = None, limit: int | None = None) -> None:
        super().__init__(message, field=field)
        self.limit = limit


class TooCostly(DomainError):
    """Work on a stored image that today's decoding limits do not allow (422).

    An image stored before a limit existed (or was lowered) is still served
    as it is; what would decode it again (a thumbnail) is refused rather than
    spending what the limits exist to bound (API.md §15).
    """


class ImageConflict(DomainError):
    """Another image is already stored under this device and timestamp (409, 4.09)."""


class ImageNotFound(DomainError):
    """No image matches (404, CoAP 4.04)."""


class Unauthenticated(DomainError):
    """The request proves no identity and needs one (HTTP 401 with a challenge, CoAP 4.01)."""


class Forbidden(DomainError):
    """The request's identity may not do this (HTTP 403, CoAP 4.03)."""


class RateLimited(DomainError):
    """Too many uploads (HTTP 429 with Retry-After, CoAP 4.29 with Max-Age; RFC 6585, 8516)."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(DomainError):
    """A part the service stands on (the object store, the database) does not answer.

    HTTP 503 with ``Retry-After``, CoAP 5.03 with Max-Age: the request was not
    carried out and may be sent again later. ``retry_after`` is in seconds.
    """

    retry_after = 5


class StorageUnavailable(Unavailable):
    """The object store did not answer, or failed, or lost an object (API.md §10)."""


class ImageDamaged(Unavailable):
    """What is stored for an image no longer gives back the bytes it received (API.md §14).

    Read or rebuilt bytes whose size or sha256 differ from the image's: never
    served, never cached (HTTP 503, CoAP 5.03). ``image_id`` names it.
    """

    def __init__(self, image_id: object, reason: str) -> None:
        super().__init__(f"image {image_id} is damaged in storage: {reason}")
        self.image_id = str(image_id)
        self.reason = reason


def for_error(table: dict[type[DomainError], T], exc: DomainError, default: T) -> T:
    """The entry of ``table`` for ``exc``'s most specific class (front ends map codes)."""
    for cls in type(exc).__mro__:
        if cls in table:
            return table[cls]
    return default
