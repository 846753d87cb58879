"""Serving stored images: validators, caching headers, conditional requests, ranges."""

from __future__ import annotations

import functools
import secrets
from collections.abc import Iterator
from datetime import datetime
from urllib.parse import quote

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.utils.cache import get_conditional_response
from django.utils.http import http_date

from images import access, storage
from images.filenames import filename_of, safe_name
from images.http.errors import error_response
from images.http.ranges import RangeNotSatisfiable, parse_range
from images.models import Image

# A stored image is inert data: never let a browser sniff it into HTML or run
# it as a page (API.md §3, §6).
CONTENT_SECURITY_POLICY = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox"


def content_disposition(image: Image) -> str:
    """``inline`` with an ASCII-safe name and the real one in ``filename*`` (RFC 6266)."""
    return _disposition(image.device_id, image.timestamp, image.content_type)


@functools.lru_cache(maxsize=1024)
def _disposition(device_id: str, timestamp: datetime, content_type: str) -> str:
    # Made once per image, not per download (readers re-fetch the same images).
    real = filename_of(device_id, timestamp, content_type)
    return f"inline; filename=\"{safe_name(real)}\"; filename*=UTF-8''{quote(real, safe='')}"


def etag_for(image: Image) -> str:
    return f'"{image.sha256}"'


def cache_headers(image: Image, *, immutable: bool) -> dict[str, str]:
    """What a 304 repeats (RFC 9110 §15.4.5) and a 200 carries too.

    ``public`` in open mode, ``private`` in token mode (see
    :func:`images.access.cache_visibility`).
    """
    max_age, final = access.image_lifetime(image, by_id=immutable)
    return {
        "ETag": etag_for(image),
        "Last-Modified": http_date(image.modified_at.timestamp()),
        "Cache-Control": access.cache_control(max_age, immutable=final),
    }


def image_headers(image: Image, *, immutable: bool) -> dict[str, str]:
    return {
        **cache_headers(image, immutable=immutable),
        "Content-Disposition": content_disposition(image),
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "Accept-Ranges": "bytes",
    }


def is_conditional(request: HttpRequest) -> bool:
    meta = request.META
    return bool(meta.get("HTTP_IF_NONE_MATCH") or meta.get("HTTP_IF_MODIFIED_SINCE"))


# Every header get_conditional_response evaluates (RFC 9110 §13.1); an empty one counts as absent.
_PRECONDITIONS = (
    "HTTP_IF_MATCH",
    "HTTP_IF_UNMODIFIED_SINCE",
    "HTTP_IF_NONE_MATCH",
    "HTTP_IF_MODIFIED_SINCE",
)


def not_modified_response(
    request: HttpRequest, image: Image, *, immutable: bool
) -> HttpResponse | None:
    """304 (or 412) when the request's validators say so; else ``None``.

    Needs only metadata, so callers can answer revalidations without reading
    the image bytes. Without any precondition there is nothing to evaluate
    (most downloads): no probe response is built.
    """
    meta = request.META
    if not any(meta.get(name) for name in _PRECONDITIONS):
        return None
    probe = HttpResponse(headers=cache_headers(image, immutable=immutable))
    answer = get_conditional_response(
        request,
        etag=etag_for(image),
        last_modified=int(image.modified_at.timestamp()),
        response=probe,
    )
    if answer is probe:
        return None
    if answer.status_code == 412:
        return error_response(request, 412, {"detail": ["precondition failed"]})
    return answer


def image_response(request: HttpRequest, image: Image, *, immutable: bool) -> HttpResponse:
    """The image bytes with every header the contract lists (API.md §3).

    A small image is read whole (it usually came with its row); a large one
    is streamed from where it is stored (:mod:`images.storage`), range by
    range, never held whole. ``HEAD`` reads no bytes at all.
    """
    answer = not_modified_response(request, image, immutable=immutable)
    if answer is not None:
        return answer
    headers = image_headers(image, immutable=immutable)
    size = image.stored_size
    ranges = None
    range_header = request.META.get("HTTP_RANGE")
    if range_header and request.method == "GET" and _if_range_passes(request, image):
        try:
            ranges = parse_range(range_header, size)
        except RangeNotSatisfiable as exc:
            response = error_response(request, 416, {"detail": [str(exc)]})
            response["Content-Range"] = f"bytes */{size}"
            return response
    content_type = image.content_type
    if ranges is None:
        body, length, status = _pieces(request, image, 0, size - 1), size, 200
    elif len(ranges) == 1:
        first, last = ranges[0]
        body, length, status = _pieces(request, image, first, last), last - first + 1, 206
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    else:
        boundary = secrets.token_hex(16)
        parts = _multipart_parts(image, ranges, boundary)
        body = _multipart_body(request, image, parts, boundary)
        length = sum(len(head) + last - first + 1 + 2 for head, first, last in parts)
        length += len(_closing(boundary))
        content_type, status = f"multipart/byteranges; boundary={boundary}", 206
    if request.method == "HEAD":
        response = HttpResponse(status=status, content_type=content_type, headers=headers)
    elif storage.reads_whole(image):
        response = HttpResponse(b"".join(body), status=status, content_type=content_type)
    else:
        response = StreamingHttpResponse(body, status=status, content_type=content_type)
    for name, value in headers.items():
        response[name] = value
    response["Content-Length"] = str(length)
    return response


def _pieces(request: HttpRequest, image: Image, first: int, last: int) -> Iterator[bytes]:
    if request.method == "HEAD":
        return iter(())
    if storage.reads_whole(image):
        return iter((storage.image_bytes(image)[first : last + 1],))
    return storage.image_pieces(image, first, last)


def _if_range_passes(request: HttpRequest, image: Image) -> bool:
    # RFC 9110 §13.1.5: serve the range only if the representation is unchanged.
    validator = request.META.get("HTTP_IF_RANGE")
    if not validator:
        return True
    if validator.startswith('"'):
        return validator == etag_for(image)
    return validator == http_date(image.modified_at.timestamp())


def _multipart_parts(
    image: Image, ranges: list[tuple[int, int]], boundary: str
) -> list[tuple[bytes, int, int]]:
    """Each part's header and byte range (RFC 9110 §14.6)."""
    return [
        (
            f"--{boundary}\r\nContent-Type: {image.content_type}\r\n"
            f"Content-Range: bytes {first}-{last}/{image.stored_size}\r\n\r\n".encode("ascii"),
            first,
            last,
        )
        for first, last in ranges
    ]


def _closing(boundary: str) -> bytes:
    return f"--{boundary}--\r\n".encode("ascii")


def _multipart_body(
    request: HttpRequest, image: Image, parts: list[tuple[bytes, int, int]], boundary: str
) -> Iterator[bytes]:
    if request.method == "HEAD":
        return iter(())

    def body() -> Iterator[bytes]:
        for head, first, last in parts:
            yield head
            yield from _pieces(request, image, first, last)
            yield b"\r\n"
        yield _closing(boundary)

    return body()
