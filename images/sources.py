"""An image as received: bytes in memory, or a seekable binary file (a large raw upload).

A raw upload is spooled to a temporary file by the HTTP parser, so that a
30 MB image is not held in a worker's memory while it is checked, hashed and
written to the database (each of which reads it in pieces). Everything that
needs the whole image at once (Pillow decoding, the optimisers) calls
:func:`read_all`.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from typing import BinaryIO

Source = bytes | bytearray | BinaryIO


def size(source: Source) -> int:
    if isinstance(source, bytes | bytearray):
        return len(source)
    return source.seek(0, io.SEEK_END)


def head(source: Source, count: int) -> bytes:
    """The first ``count`` bytes (fewer if the image is shorter)."""
    if isinstance(source, bytes | bytearray):
        return bytes(source[:count])
    source.seek(0)
    return source.read(count)


def read_all(source: Source) -> bytes | bytearray:
    if isinstance(source, bytes | bytearray):
        return source
    source.seek(0)
    return source.read()


def sha256(source: Source) -> str:
    if isinstance(source, bytes | bytearray):
        return hashlib.sha256(source).hexdigest()
    source.seek(0)
    return hashlib.file_digest(source, "sha256").hexdigest()


def pieces(source: Source, piece_bytes: int) -> Iterator[bytes | memoryview]:
    """The image in pieces of at most ``piece_bytes``, without a copy of the whole."""
    if isinstance(source, bytes | bytearray):
        with memoryview(source) as view:
            for start in range(0, len(view), piece_bytes):
                yield view[start : start + piece_bytes]
        return
    source.seek(0)
    while piece := source.read(piece_bytes):
        yield piece


def as_file(source: Source) -> BinaryIO:
    """A seekable file over the image, at its start, that does not copy it."""
    if isinstance(source, bytes):
        return io.BytesIO(source)  # shares the bytes until written to
    if isinstance(source, bytearray):
        return io.BufferedReader(_BufferRaw(source))  # io.BytesIO would copy it
    source.seek(0)
    return source


class _BufferRaw(io.RawIOBase):
    """Read-only, seekable raw file over a bytearray."""

    def __init__(self, data: bytearray) -> None:
        self._view = memoryview(data).toreadonly()
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        count = max(0, min(len(buffer), len(self._view) - self._pos))
        buffer[:count] = self._view[self._pos : self._pos + count]
        self._pos += count
        return count

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        self._view.release()
        super().close()
