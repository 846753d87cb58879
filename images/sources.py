"""An image as received: bytes in memory, or a seekable binary file (a raw upload).

A raw upload is spooled to a temporary file by the HTTP parser, so that a
30 MB image is not held in a worker's memory while it is checked, hashed and
written to the database (each of which reads it in pieces). Everything that
needs the whole image at once (Pillow decoding, the optimizers) calls
:func:`read_all`.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from typing import BinaryIO

Source = bytes | BinaryIO


def size(source: Source) -> int:
    if isinstance(source, bytes):
        return len(source)
    return source.seek(0, io.SEEK_END)


def head(source: Source, count: int) -> bytes:
    """The first ``count`` bytes (fewer if the image is shorter)."""
    if isinstance(source, bytes):
        return source[:count]
    source.seek(0)
    return source.read(count)


def read_all(source: Source) -> bytes:
    if isinstance(source, bytes):
        return source
    source.seek(0)
    return source.read()


def sha256(source: Source) -> str:
    if isinstance(source, bytes):
        return hashlib.sha256(source).hexdigest()
    source.seek(0)
    return hashlib.file_digest(source, "sha256").hexdigest()


def pieces(source: Source, piece_bytes: int) -> Iterator[bytes | memoryview]:
    """The image in pieces of at most ``piece_bytes``, without a copy of the whole."""
    if isinstance(source, bytes):
        with memoryview(source) as view:
            for start in range(0, len(view), piece_bytes):
                yield view[start : start + piece_bytes]
        return
    source.seek(0)
    while piece := source.read(piece_bytes):
        yield piece


def as_file(source: Source) -> BinaryIO:
    """A seekable file over the image, at its start (bytes are shared, not copied)."""
    if isinstance(source, bytes):
        return io.BytesIO(source)
    source.seek(0)
    return source
