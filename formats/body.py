"""Reading a request body for a DRF parser, refusing an incomplete one."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping
from typing import IO, Any

from django.conf import settings
from rest_framework.exceptions import ParseError

# Read in pieces of this size: a server may assemble one large read() from
# copies (granian's WSGI input peaked at 2.2x a 30 MB body read at once;
# measured).
_PIECE_BYTES = 1 << 16


# A spooled body stays in memory up to this size, then moves to a temporary file.
SPOOL_MEMORY_BYTES = 1 << 20


def spool_body(stream: Any, parser_context: Mapping[str, Any] | None) -> IO[bytes]:
    """The whole body in a temporary file (in memory while small), at its start.

    For bodies that are consumed in pieces (a raw image): a large upload then
    never sits whole in a worker's memory. ``ParseError`` (400) when the body
    is shorter than its Content-Length, as for :func:`read_body`. The file is
    deleted when closed (or collected). The directory is Django's
    ``FILE_UPLOAD_TEMP_DIR`` (the system's temporary directory by default).
    """
    spooled = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - the caller owns it
        max_size=SPOOL_MEMORY_BYTES, dir=settings.FILE_UPLOAD_TEMP_DIR
    )
    try:
        for piece in _pieces(stream, parser_context):
            spooled.write(piece)
    except BaseException:
        spooled.close()  # deletes the file now, not when collected
        raise
    spooled.seek(0)
    return spooled


def read_body(stream: Any, parser_context: Mapping[str, Any] | None) -> bytes:
    """The whole body; ``ParseError`` (400) when it is shorter than Content-Length.

    A client that half-closes after fewer bytes than it announced sent an
    incomplete message (RFC 9112 §8), not a shorter image or document. Read
    in pieces; nothing is allocated for bytes that have not arrived.
    """
    return b"".join(_pieces(stream, parser_context))


def _pieces(stream: Any, parser_context: Mapping[str, Any] | None) -> Iterator[bytes]:
    """The body in pieces, up to its Content-Length; ``ParseError`` if it ends short."""
    body = CheckedBody(stream, parser_context)
    while piece := body.read(_PIECE_BYTES):
        yield piece


class CheckedBody:
    """A request body as a file that reads up to its Content-Length, and no further.

    For a parser that reads the body itself (Django's multipart parser):
    ``read()`` raises ``ParseError`` (400) when the body ends before its
    Content-Length, as :func:`read_body` does, so that a client that gave up
    half-way is not taken to have sent a shorter image.
    """

    def __init__(self, stream: Any, parser_context: Mapping[str, Any] | None) -> None:
        request = (parser_context or {}).get("request")
        length = request.META.get("CONTENT_LENGTH", "") if request is not None else ""
        self._source = stream
        self._announced = int(length) if length.isdigit() else None
        self._received = 0

    def read(self, size: int = -1) -> bytes:
        wanted = size
        if self._announced is not None:
            left = self._announced - self._received
            wanted = left if size < 0 else min(size, left)
        piece = self._source.read(wanted) if wanted != 0 and self._source is not None else b""
        self._received += len(piece)
        if not piece and wanted != 0 and self._announced is not None:
            raise ParseError(
                f"the request body ended after {self._received} of its {self._announced} bytes"
            )
        return piece
