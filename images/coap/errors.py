"""Domain errors as CoAP responses: the one place that knows their codes.

Resources raise the typed errors of :mod:`images.errors`; the base resource
turns them into responses here. Protocol errors (4.02, 4.06, 4.08) are
aiocoap's own renderable errors, which carry their code themselves.
"""

from __future__ import annotations

from aiocoap import Message
from aiocoap.numbers.codes import Code

from images.errors import (
    DomainError,
    Forbidden,
    ImageConflict,
    ImageNotFound,
    ImageTooLarge,
    InvalidInput,
    RateLimited,
    Unauthenticated,
    Unavailable,
    UnsupportedMediaType,
    for_error,
)

# 4.09 Conflict comes from RFC 8132 (aiocoap has no name for it).
CONFLICT = Code(137)

CODES: dict[type[DomainError], Code] = {
    InvalidInput: Code.BAD_REQUEST,
    UnsupportedMediaType: Code.UNSUPPORTED_CONTENT_FORMAT,
    ImageTooLarge: Code.REQUEST_ENTITY_TOO_LARGE,
    ImageConflict: CONFLICT,
    ImageNotFound: Code.NOT_FOUND,
    Unauthenticated: Code.UNAUTHORIZED,
    Forbidden: Code.FORBIDDEN,
    RateLimited: Code.TOO_MANY_REQUESTS,
    Unavailable: Code.SERVICE_UNAVAILABLE,
}

# An error answer cannot be sent block-wise (it has no ETag to reassemble it
# safely), so its diagnostic must fit one datagram with room to spare.
DIAGNOSTIC_MAX_BYTES = 512


def code_for(exc: DomainError) -> Code:
    return for_error(CODES, exc, Code.BAD_REQUEST)


def diagnostic(exc: DomainError) -> bytes:
    """A short human-readable payload (RFC 7252 §5.5.2): UTF-8, no Content-Format."""
    text = exc.message if exc.field == "detail" else f"{exc.field}: {exc.message}"
    return text.encode("utf-8")[:DIAGNOSTIC_MAX_BYTES].decode("utf-8", "ignore").encode("utf-8")


def error_response(exc: DomainError) -> Message:
    """The response for a domain error, with Size1 on a 4.13 for a byte limit (RFC 7959 §4).

    Max-Age 0: without it a 4.04 could be reused for 60 s (RFC 7252 §5.10.5),
    while the image it asked for may arrive any moment. A 5.03's Max-Age is
    the time to wait before trying again.
    """
    response = Message(code=code_for(exc), payload=diagnostic(exc), max_age=0)
    if isinstance(exc, ImageTooLarge) and exc.limit is not None:
        response.opt.size1 = exc.limit
    if isinstance(exc, (Unavailable, RateLimited)):
        # RFC 7252 §5.9.3.4 (5.03) and RFC 8516 §3 (4.29): Max-Age says when
        # to try again.
        response.opt.max_age = exc.retry_after
    return response
