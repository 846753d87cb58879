"""Checking that a PNG's image data is complete, in bounded memory (RFC 2083 / PNG 3rd ed.).

Pillow verifies an image by decoding it, which holds the whole raster: 38 MiB
for a 30 MB noise PNG of 3162 x 3162 pixels (Pillow keeps RGB as 4 bytes a
pixel). The deferred path (``IMAGES_OPTIMIZE=deferred``) only has to refuse
what cannot be decoded before it answers 201; the background pass decodes
every pixel later anyway. So for a still PNG it checks the encoding instead,
with no raster, failing where Pillow's decoder fails: a bad CRC in a chunk
before the image data, IDAT chunks whose zlib stream is corrupt or ends
before the last scanline the header implies (Adam7 passes included), and a
scanline whose filter type is not 0 to 4. Like Pillow, it stops at the last
scanline (a zlib stream that ends early leaves the other rows zero). A file
with chunks after its image data that Pillow's handlers might refuse is left
to Pillow. Past that, any bytes decode to some pixels; the
tests check this against Pillow on every truncation and on damaged files. One
difference, on the safe side: a file cut inside its IDAT data is refused even
where Pillow still finds every row in it.

Written here because no library in the stack checks a PNG without decoding
it into memory (Pillow's ``verify()`` reads the chunks but not the zlib
stream). Animated PNGs (acTL) are left to Pillow: each frame has its own
stream and size.

The same reading of chunks also tells how a PNG was deflated
(:func:`deflated_at_maximum`), which the optimizer's QUICK effort asks.
"""

from __future__ import annotations

import io
import itertools
import re
import struct
import zlib
from collections.abc import Iterator
from typing import BinaryIO, NamedTuple

from PIL import PngImagePlugin

from images import sources
from images.errors import InvalidImage

_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
# Adam7: (first column, first row, column step, row step) of each pass.
_ADAM7 = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)
_PIECE_BYTES = 1 << 18  # zlib input and output are handled in pieces of this size


class _Chunk(NamedTuple):
    kind: bytes
    start: int  # where its data starts in the file
    length: int
    crc: int | None  # None: the file ends before the CRC; _CUT: before the data ends


_CUT = -1
_TEXT_BYTES = 1 << 20
_CHUNK_TYPE = re.compile(rb"\w{4}")


def png_data_complete(source: sources.Source) -> bool:
    """True when ``source`` is a still PNG whose image data is complete and well-formed.

    ``source`` is the image or a seekable file holding it (read in pieces).
    False when Pillow must decide (the caller then decodes the image): an
    animated PNG, chunks other than IEND after the image data, a palette of
    more than 256 entries, image data continued in other chunks. Raises
    :class:`InvalidImage` where Pillow's decode fails: a bad CRC before the
    image data, or image data that is truncated, corrupt (zlib) or short of
    what the header implies, or a scanline with an unknown filter type. The image
    has already passed Pillow's header checks (:func:`images.compression.probe`).
    """
    file = sources.as_file(source)
    chunks = _chunks(file)
    width, height, bits_per_pixel, interlaced = _header(file, chunks)
    inflater = _Inflater(list(_scanlines(width, height, bits_per_pixel, interlaced)))
    seen_image_data = False
    for chunk in chunks:
        if chunk.kind == b"IDAT":
            if chunk.crc == _CUT:
                # Stricter than Pillow, which may still decode every row
                # here, depending on how much input zlib reads ahead.
                raise InvalidImage("the PNG is truncated inside its image data")
            # Pillow skips IDAT CRCs; zlib's Adler-32 covers the pixels.
            seen_image_data = True
            for piece in _data(file, chunk):
                inflater.feed(piece)
                if inflater.complete:
                    return _plain_trailer(chunks)
            continue
        if seen_image_data:
            # Pillow may read on through DDAT chunks; it decides such files.
            return False
        if chunk.kind == b"PLTE" and chunk.length > 3 * 256:
            return False  # Pillow refuses it when loading; it decides
        crc = zlib.crc32(chunk.kind)
        for piece in _data(file, chunk):
            crc = zlib.crc32(piece, crc)
        if crc != chunk.crc:
            raise InvalidImage(f"the PNG's {_name(chunk)} chunk fails its CRC")
        if chunk.kind == b"acTL":
            return False
    raise InvalidImage("the PNG's image data is truncated")


def _plain_trailer(chunks: Iterator[_Chunk]) -> bool:
    """True if what follows the image data cannot make Pillow's decode fail.

    After the pixels Pillow reads every chunk up to IEND: it skips whole
    chunks it has no handler for, and the rest of the IDAT stream, and runs
    its handler for the others, several of which refuse malformed content.
    Files with such chunks (other than a modest tEXt, whose handler cannot
    fail) or with a cut chunk are left to Pillow rather than imitating it.
    """
    for chunk in chunks:
        if chunk.kind == b"IEND" or not _CHUNK_TYPE.fullmatch(chunk.kind):
            return True  # where Pillow stops reading
        if chunk.crc == _CUT:
            return False
        handled = hasattr(PngImagePlugin.PngStream, f"chunk_{chunk.kind.decode('ascii')}")
        if chunk.kind == b"tEXt":
            if chunk.length > _TEXT_BYTES:
                return False  # Pillow limits the memory text may take
        elif handled and chunk.kind != b"IDAT":
            return False
    return True


def _name(chunk: _Chunk) -> str:
    return chunk.kind.decode("latin-1")


def _chunks(file: BinaryIO) -> Iterator[_Chunk]:
    """Each chunk's place, from its header; stops when not even a header is left."""
    size = file.seek(0, io.SEEK_END)
    pos = 8  # after the signature, which Pillow has checked
    while pos + 8 <= size:
        file.seek(pos)
        length, kind = struct.unpack(">I4s", file.read(8))
        end = pos + 8 + length
        if end > size:
            yield _Chunk(kind, pos + 8, size - pos - 8, _CUT)
            return
        crc = None
        if end + 4 <= size:
            file.seek(end)
            (crc,) = struct.unpack(">I", file.read(4))
        yield _Chunk(kind, pos + 8, length, crc)
        pos = end + 4


def _data(file: BinaryIO, chunk: _Chunk) -> Iterator[bytes]:
    """A chunk's data, in pieces."""
    for start in range(chunk.start, chunk.start + chunk.length, _PIECE_BYTES):
        file.seek(start)
        yield file.read(min(_PIECE_BYTES, chunk.start + chunk.length - start))


def _header(file: BinaryIO, chunks: Iterator[_Chunk]) -> tuple[int, int, int, bool]:
    chunk = next(chunks, None)
    if chunk is None or chunk.kind != b"IHDR" or chunk.length < 13:
        raise InvalidImage("the PNG does not start with an IHDR chunk")
    file.seek(chunk.start)
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", file.read(13))
    if colour not in _CHANNELS or width == 0 or height == 0:
        raise InvalidImage("the PNG header is invalid")
    return width, height, _CHANNELS[colour] * depth, interlace == 1


def _scanlines(width: int, height: int, bits: int, interlaced: bool) -> Iterator[tuple[int, int]]:
    """(rows, bytes per row including the filter byte) of each pass, in stream order."""
    passes = _ADAM7 if interlaced else ((0, 0, 1, 1),)
    for column, row, column_step, row_step in passes:
        columns = (width - column + column_step - 1) // column_step
        rows = (height - row + row_step - 1) // row_step
        if columns > 0 and rows > 0:
            yield rows, 1 + (columns * bits + 7) // 8


class _Inflater:
    """Inflates the IDAT stream in pieces, checking each scanline's filter byte as it passes."""

    def __init__(self, layout: list[tuple[int, int]]) -> None:
        self._zlib = zlib.decompressobj()
        self._layout = layout  # what remains: (rows, stride) of each pass
        self._offset = 0  # bytes of the current pass already seen
        self._remaining = sum(rows * stride for rows, stride in layout)
        self._produced = 0

    @property
    def complete(self) -> bool:
        """Every scanline arrived, or the zlib stream ended after a whole one.

        Pillow leaves the rows after an early end zero, but refuses a stream
        that ends inside a scanline or before the first (measured).
        """
        if not self._remaining:
            return True
        if not self._zlib.eof:
            return False
        stride = self._layout[0][1]
        if self._produced == 0 or self._offset % stride:
            raise InvalidImage("the PNG's image data ends inside a scanline")
        return True

    def feed(self, piece: bytes) -> None:
        pending = piece
        while pending and not self.complete:
            try:
                # Never inflate past the last scanline: Pillow stops there,
                # so damage after it (even to the Adler-32) goes unseen.
                out = self._zlib.decompress(pending, min(_PIECE_BYTES, self._remaining))
            except zlib.error as exc:
                raise InvalidImage(f"the PNG's image data is corrupt ({exc})") from None
            self._scan(out)
            self._remaining -= len(out)
            self._produced += len(out)
            pending = self._zlib.unconsumed_tail

    def _scan(self, out: bytes) -> None:
        pos = 0
        while pos < len(out) and self._layout:
            rows, stride = self._layout[0]
            size = rows * stride
            take = min(size - self._offset, len(out) - pos)
            # The filter bytes in this stretch sit every ``stride`` bytes from
            # the next row start: one slice checks them all.
            first = (-self._offset) % stride
            filters = out[pos + first : pos + take : stride]
            if filters and max(filters) > 4:
                raise InvalidImage("the PNG has a scanline with an unknown filter type")
            pos += take
            self._offset += take
            if self._offset == size:
                self._layout.pop(0)
                self._offset = 0


# What of the image data is read to judge its filters: a few rows suffice.
_SAMPLE_BYTES = 1 << 16
_CHUNKS_BEFORE_DATA = 1000


def deflated_at_maximum(data: bytes) -> bool:
    """Whether a still, non-interlaced PNG says zlib compressed it at maximum, its rows filtered.

    The zlib header's FLEVEL (RFC 1950: 3 is "maximum compression, slowest
    algorithm", zlib's levels 7 to 9) and the filter bytes of the rows in
    the first piece of the stream. Only a near-optimal deflate beats such a
    file (:mod:`images.compression.png`), so the optimizer's QUICK effort
    keeps it as received. Not proof of anything: False whenever the file is
    not plainly such a PNG (interlaced, animated, cut, unfiltered rows).
    """
    file = io.BytesIO(data)
    chunks = _chunks(file)
    try:
        width, height, bits_per_pixel, interlaced = _header(file, chunks)
    except InvalidImage:
        return False
    if interlaced:
        return False
    [(_, stride)] = _scanlines(width, height, bits_per_pixel, interlaced)
    # A file can hold millions of empty chunks before its image data; a
    # judgement needs no more than a few dozen.
    for chunk in itertools.islice(chunks, _CHUNKS_BEFORE_DATA):
        if chunk.kind == b"acTL":
            return False
        if chunk.kind != b"IDAT":
            continue
        stream = data[chunk.start : chunk.start + min(chunk.length, _SAMPLE_BYTES)]
        if len(stream) < 2 or stream[0] & 0x0F != 8 or stream[1] >> 6 != 3:
            return False  # not deflate, or not zlib's maximum
        try:
            rows = zlib.decompressobj().decompress(stream, _SAMPLE_BYTES)
        except zlib.error:
            return False
        return any(rows[::stride])  # a row filtered (filter type 0 is none)
    return False
