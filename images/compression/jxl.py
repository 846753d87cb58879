"""Byte-exact compaction of JPEG files as JPEG XL (API.md §12): bytes in, bytes out.

libjxl transcodes a JPEG's DCT coefficients losslessly and keeps what it
needs to write the very same file again in a "jbrd" (JPEG bitstream
reconstruction) box, ISO/IEC 18181-2: markers, Huffman tables, scan script,
restart intervals, padding bits. :func:`jpeg_restore` asks libjxl for that
file back.

Two forms are kept at rest:

- ``"jxl"``: a single-picture JPEG with nothing after its EOI becomes one
  JPEG XL file, which any JPEG XL decoder can also show.
- ``"jxl-parts"``: anything else that is JPEG-based (a multi-picture file,
  MPO, or bytes a device appended after the EOI) becomes a sequence of
  parts, each picture transcoded on its own and the bytes around them kept
  as they are (see "The parts container" below). libjxl would accept such a
  file whole, but it keeps everything after the first EOI as generic data,
  so an MPO's further pictures would only be Brotli-compressed (a 2-picture
  MPO of 30,277 bytes: 24,814 whole, 21,889 in parts), and an appended
  video would go through Brotli for nothing.

Every compacted form is rebuilt with :func:`jpeg_restore` and its sha256 compared
with the input's before it is returned: the encoder is never trusted.

The parts container (version 1), all integers unsigned big-endian::

    magic    8 bytes   b"JXLPARTS"
    version  1 byte    1
    size     4 bytes   length of the rebuilt file
    crc      4 bytes   its CRC-32 (ISO 3309, as zlib.crc32)
    then one or more parts, up to the end of the data:
    kind     1 byte    0: raw bytes, kept as they are; 1: a JPEG picture as JPEG XL
    length   4 bytes   length of the payload
    payload  length bytes

Rebuilding concatenates the parts, each JPEG XL payload turned back into its
JPEG. Consecutive raw bytes are one part. Size and CRC make damage that the
parts' framing and libjxl cannot see (a cut between two parts, a changed
byte in a raw part or in a JPEG XL payload that still decodes) an error
instead of different bytes. A file of 4 GiB or more cannot be held, which
the service's byte limit (API.md §9) rules out long before.

Measured with ``bench/compact.py`` (libjxl 0.11.2, imagecodecs 2026.3.6)
over the 6 JPEGs of ../shared/corpus (1.31 MB): at rest 0.830 of the
received bytes, where mozjpeg's optimization (today's path) keeps 0.947;
CPU per MB of JPEG: encoding 119 ms, the whole :func:`jpeg_compact` call
(with its verifying rebuild) 160 ms, rebuilding 39 ms. With the corpus's
17 PNGs stored as today, the whole corpus goes from 0.881 to 0.849.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass

import imagecodecs

from images.compression import mpo

FORM_JXL = "jxl"
FORM_PARTS = "jxl-parts"

# libjxl holds about 34 bytes per pixel of a 4:4:4 picture while it transcodes
# it, 23 for 4:2:0, more for a JPEG dense in detail (51 for q100 noise).
# Peak RSS (VmHWM) of a child compacting one generated JPEG with no cap, the
# child holding 38-82 MB (interpreter, codec, the JPEG) before it starts
# (``bench/compact.py --memory``):
#
#   JPEG                          bytes          peak RSS
#   10 MP 4:2:0 / 4:4:4 q90      2.3 /  4.2 MB   275 /  383 MB
#   20 MP 4:2:0 / 4:4:4 q90      4.7 /  8.3 MB   513 /  725 MB
#   40 MP 4:2:0 / 4:4:4 q90      9.3 / 16.7 MB   956 / 1403 MB
#   10 MP 4:4:4 q100 noise            41 MB          586 MB
#   20 MP 4:4:4 q95 noise             48 MB         1041 MB
#
# The service accepts up to 100 MP and 50 MB (API.md §9), and no process may
# pass 1.5 GB. Under this cap the worst picture (4:4:4 noise near the byte
# limit) peaks at 1.04 GB; as the first picture of a 46 MB MPO, 1.08 GB; a
# Django worker adds ~50 MB of its own: over 25 % headroom. 40 MP would not
# fit. Pixels (from the frame header), not coefficients, are counted, so the
# bound holds for every subsampling; larger pictures are not compacted.
MAX_PIXELS = 20_000_000

# imagecodecs' ``numthreads`` sizes libjxl's thread pool (None means 1, see
# imagecodecs/_jpegxl.pyx). Transcoding a JPEG is mostly serial in libjxl. On
# 2 cores (shared with other work, load ~3.5; ``bench/compact.py --threads``,
# four runs), 2 threads saved no wall time on the corpus JPEGs and took up to
# 20 % more CPU; on generated 20 MP JPEGs they saved 10-35 % of wall time
# (4:4:4: 1.56-1.70 s -> 0.99-1.42 s) for about the same CPU (1.39-1.54 s at
# 1 thread, 1.32-1.43 s at 2). A background worker pays for CPU, not latency,
# and a second thread would take the core another worker could use: 1 thread.
THREADS = 1

_MAGIC = b"JXLPARTS"
_VERSION = 1
_HEADER = struct.Struct(">8sBII")  # magic, version, size and CRC-32 of the rebuilt file
_RAW = 0
_JXL = 1
_PART = struct.Struct(">BI")  # kind, payload length
_MAX_SIZE = 2**32 - 1


@dataclass(frozen=True)
class Compacted:
    """What is kept at rest for a JPEG: :func:`jpeg_restore` rebuilds the JPEG from it."""

    data: bytes
    form: str  # FORM_JXL or FORM_PARTS


# Frame headers libjxl transcodes (ISO/IEC 18181-2 keeps Huffman-coded
# JPEGs): baseline, extended and progressive Huffman (SOF0-SOF2), 8-bit
# samples, grey or three components. Arithmetic coding, lossless JPEG,
# 12-bit samples and CMYK it refuses.
_TRANSCODED_MARKERS = frozenset({0xC0, 0xC1, 0xC2})


def compactable(data: bytes, *, max_pixels: int = MAX_PIXELS) -> bool:
    """Whether :func:`jpeg_compact` may take ``data``, judged from its first frame header alone.

    True for a JPEG whose first picture libjxl transcodes and which is not
    over ``max_pixels``; the encoder still has the last word (a damaged
    stream, a form that is not smaller), after which the image is simply
    held as received. False means: take today's path (API.md §12).
    """
    header = mpo.frame(data)
    return (
        header is not None
        and header.marker in _TRANSCODED_MARKERS
        and header.precision == 8
        and header.components in (1, 3)
        and 0 < header.width * header.height <= max_pixels
    )


def jpeg_compact(data: bytes, *, max_pixels: int = MAX_PIXELS) -> Compacted | None:
    """A form strictly smaller than ``data`` from which ``data`` is rebuilt bit for bit, or None.

    None when ``data`` is not a complete JPEG, libjxl refuses every picture
    in it (CMYK, arithmetic coding, 12-bit samples, a damaged stream...), a
    picture is larger than ``max_pixels`` (from its frame header: a single
    picture, or every picture of a multi-picture file), the compacted form would
    not be smaller, or rebuilding it does not give the same sha256. In a
    multi-picture file, a picture that cannot be transcoded is kept as it
    is while the others are. Never raises: whatever goes wrong, today's
    path (API.md §12) takes the file.
    """
    try:
        compacted = _compacted(data, max_pixels)
        if compacted is None or len(compacted.data) >= len(data):
            return None
        rebuilt = jpeg_restore(compacted.data, compacted.form)
    except (ValueError, MemoryError):
        return None  # MemoryError: copies of a large file, in a worker short of memory
    if hashlib.sha256(rebuilt).digest() != hashlib.sha256(data).digest():
        return None
    return compacted


def jpeg_restore(data: bytes, form: str) -> bytes:
    """The JPEG file that :func:`jpeg_compact` compacted as ``data`` in ``form``.

    Raises ValueError for an unknown form, a damaged container, or a JPEG XL
    file that libjxl cannot turn back into a JPEG (truncated, not JPEG XL,
    no reconstruction data). The parts container's size and CRC-32 catch
    what libjxl does not notice; a plain ``"jxl"`` file has no such check,
    and a few changed bytes in it may rebuild different bytes: compare with
    the stored sha256 where that matters. MemoryError is left to the caller.
    """
    if form == FORM_JXL:
        return _jpeg_from_jxl(data)
    if form == FORM_PARTS:
        size, crc, parts = _parts(data)
        rebuilt = b"".join(
            payload if kind == _RAW else _jpeg_from_jxl(payload) for kind, payload in parts
        )
        if len(rebuilt) != size or zlib.crc32(rebuilt) != crc:
            raise ValueError("jxl-parts: the rebuilt file does not match its size and CRC-32")
        return rebuilt
    raise ValueError(f"unknown compacted form {form!r}")


def _compacted(data: bytes, max_pixels: int) -> Compacted | None:
    """The unverified compacted form of ``data``: one JPEG XL file, or the parts container."""
    spans = mpo.pictures(data)
    if not spans:
        return None
    if spans == [(0, len(data))]:
        jxl = _transcoded(data, max_pixels)
        return None if jxl is None else Compacted(jxl, FORM_JXL)
    return _compacted_parts(data, spans, max_pixels)


def _transcoded(picture: bytes, max_pixels: int) -> bytes | None:
    """``picture`` (one complete JPEG) as JPEG XL with reconstruction data, or None."""
    pixels = mpo.frame_pixels(picture)
    if pixels is None or pixels > max_pixels:
        return None
    try:
        return imagecodecs.jpegxl_encode_jpeg(picture, numthreads=THREADS)
    except Exception:
        # libjxl reports a refused file as JpegxlError, imagecodecs adds
        # ValueError and MemoryError; whatever it raises, the picture is
        # simply not compacted.
        return None


def _compacted_parts(
    data: bytes, spans: list[tuple[int, int]], max_pixels: int
) -> Compacted | None:
    """``data`` in the parts container, each picture in ``spans`` transcoded if that is smaller."""
    if len(data) > _MAX_SIZE:
        return None
    parts: list[tuple[int, bytes]] = []
    done = 0  # everything before this offset is in ``parts``
    for start, end in spans:
        picture = data[start:end]
        jxl = _transcoded(picture, max_pixels)
        if jxl is None or len(jxl) >= len(picture):
            continue  # the picture stays in the raw bytes around it
        if start > done:
            parts.append((_RAW, data[done:start]))
        parts.append((_JXL, jxl))
        done = end
    if not parts:
        return None  # not one picture could be made smaller
    if done < len(data):
        parts.append((_RAW, data[done:]))
    body = b"".join(_PART.pack(kind, len(payload)) + payload for kind, payload in parts)
    header = _HEADER.pack(_MAGIC, _VERSION, len(data), zlib.crc32(data))
    return Compacted(header + body, FORM_PARTS)


def _parts(data: bytes) -> tuple[int, int, list[tuple[int, memoryview]]]:
    """Size, CRC-32 and parts of a container, checked before any is decoded (else ValueError)."""
    if len(data) < _HEADER.size or not data.startswith(_MAGIC):
        raise ValueError("not a jxl-parts container")
    _magic, version, size, crc = _HEADER.unpack_from(data)
    if version != _VERSION:
        raise ValueError(f"jxl-parts version {version} is not supported")
    view = memoryview(data)
    pos = _HEADER.size
    parts = []
    while pos < len(data):
        if pos + _PART.size > len(data):
            raise ValueError(f"jxl-parts: part header cut short at byte {pos}")
        kind, length = _PART.unpack_from(data, pos)
        if kind not in (_RAW, _JXL):
            raise ValueError(f"jxl-parts: unknown part kind {kind} at byte {pos}")
        pos += _PART.size
        if pos + length > len(data):
            raise ValueError(f"jxl-parts: a {length}-byte part runs past the end")
        parts.append((kind, view[pos : pos + length]))
        pos += length
    if not parts:
        raise ValueError("jxl-parts: no parts")
    return size, crc, parts


def _jpeg_from_jxl(jxl: bytes | memoryview) -> bytes:
    """The JPEG whose reconstruction data ``jxl`` holds; ValueError if there is none to be had."""
    if not len(jxl):
        raise ValueError("cannot rebuild the JPEG: no JPEG XL data")
    try:
        return imagecodecs.jpegxl_decode_jpeg(jxl, numthreads=THREADS)
    except (RuntimeError, ValueError) as error:
        # JpegxlError (a RuntimeError) for a damaged or truncated stream,
        # ValueError for data that is not JPEG XL or has no JPEG to rebuild.
        raise ValueError(f"cannot rebuild the JPEG: {error}") from error
