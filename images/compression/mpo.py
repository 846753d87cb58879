"""Where the JPEG pictures of a file are, and how many pixels each has, from markers alone.

A multi-picture file (MPO, CIPA DC-007) is a JPEG whose first picture carries
an APP2 "MPF" segment, the MP Extensions; other pictures follow it in the
file. Its MP Index IFD (DC-007 §5.2.3) lists every picture's size and
offset, each offset counted from the MP Header (the byte-order mark just
after "MPF\\0"), the first picture's offset being 0. Cameras write depth
maps, stereo pairs and gain maps (Ultra HDR) this way.

The MP Index is the only way further pictures are found: the bytes after a
JPEG's EOI are not scanned for another SOI. Without an index those bytes
are anything a device appended (an MP4 of a motion photo, a vendor's
trailer), which may well contain JPEGs of their own, and telling an
embedded picture from a false SOI would need decoding every candidate.
Unindexed bytes are kept as they are, which is always byte-exact.

Nothing here decodes image data: the pixels of a picture come from its frame
header (ITU-T T.81 §B.2.2), so a caller can refuse a large picture before
any codec allocates for it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from images.compression.jpeg import jpeg_length

SOI = b"\xff\xd8"
_MPF_SIGNATURE = b"MPF\x00"
_APP2 = 0xE2
_SOS = 0xDA
_EOI = 0xD9
_MP_ENTRY_TAG = 0xB002  # MP Entry: 16 bytes per picture (DC-007 §5.2.3.3)
_MP_ENTRY_SIZE = 16
_IFD_ENTRY_SIZE = 12  # tag, type, count, value or offset (TIFF 6.0 §2)
# Start Of Frame markers, every coding process (T.81 Table B.1); C4 (DHT),
# C8 (JPG) and CC (DAC) share the range but are not frame headers.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def pictures(data: bytes) -> list[tuple[int, int]]:
    """The ``(start, end)`` spans of the JPEG pictures in ``data``, in file order.

    Each span runs from an SOI to just past its own EOI, found by walking the
    picture's markers (T.81 §B.1.1), so a span is always a complete picture,
    whatever the MP Index claims. The first picture starts at offset 0; the
    others are those its MP Index lists. An entry that does not point at a
    complete picture within its stated size, or points into a picture
    already found, is ignored: its bytes are then simply not in any span.
    Returns ``[]`` when ``data`` does not start with a complete picture.
    """
    if not data.startswith(SOI):
        return []
    first_end = jpeg_length(data)
    if first_end is None:
        return []
    spans = [(0, first_end)]
    # Views, not copies: a hostile index may list many large entries.
    with memoryview(data) as view:
        for start, size in sorted(_mp_entries(data[:first_end])):
            if start < spans[-1][1] or not data.startswith(SOI, start):
                continue  # inside a picture already found (or a repeated entry), or no picture
            length = jpeg_length(view[start : start + size])
            if length is not None:
                spans.append((start, start + length))
    return spans


@dataclass(frozen=True)
class Frame:
    """A picture's frame header (T.81 §B.2.2): its coding process, sample precision and size."""

    marker: int  # SOF0 to SOF15: baseline, extended, progressive, lossless; Huffman or arithmetic
    precision: int  # bits per sample
    height: int  # 0: given later, in a DNL segment (§B.2.5)
    width: int
    components: int


def frame(picture: bytes) -> Frame | None:
    """The picture's frame header, read from its markers; None without a usable one."""
    for marker, start, end in _header_segments(picture):
        if marker in _SOF_MARKERS:
            if end - start < 6:
                return None
            precision, height, width, components = struct.unpack_from(">BHHB", picture, start)
            return Frame(marker, precision, height, width, components)
    return None


def indexed_pictures(data: bytes) -> int:
    """How many pictures the first picture's MP Index says the file holds (1 without an index).

    Read from the index alone, before any picture is looked for, so that a
    hostile count is refused (API.md §15) before it costs anything.
    """
    first_end = jpeg_length(data)
    return 1 if first_end is None else 1 + len(_mp_entries(data[:first_end]))


def frame_pixels(picture: bytes) -> int | None:
    """Width x height from the picture's frame header; None without a usable one.

    A height of 0 means the number of lines comes later, in a DNL segment
    (§B.2.5): the size is then unknown here, and so is the cost of decoding.
    """
    header = frame(picture)
    return None if header is None else header.width * header.height or None


def _header_segments(picture: bytes) -> Iterator[tuple[int, int, int]]:
    """``(marker, payload start, payload end)`` of each marker segment before the first SOS.

    Tables, frame header and application segments all precede the first scan
    (T.81 §B.2.1), so the walk ends there; a payload cut short by the end of
    ``picture`` ends at the end.
    """
    pos = len(SOI)
    while pos + 4 <= len(picture) and picture[pos] == 0xFF:
        marker = picture[pos + 1]
        if marker == 0xFF:  # a fill byte before a marker (§B.1.1.2)
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # TEM, RSTn, SOI: no length
            pos += 2
            continue
        if marker in (_SOS, _EOI):
            return
        length = int.from_bytes(picture[pos + 2 : pos + 4], "big")
        if length < 2:
            return
        yield marker, pos + 4, min(pos + 2 + length, len(picture))
        pos += 2 + length


def _mp_entries(first: bytes) -> list[tuple[int, int]]:
    """``(offset in the file, size)`` of each further picture the MP Index of ``first`` lists.

    The first picture's own entry (offset 0) is left out. A malformed index
    yields what could be read before the damage, possibly nothing: the
    pictures it would have named stay unindexed bytes.
    """
    for marker, start, end in _header_segments(first):
        if marker == _APP2 and first.startswith(_MPF_SIGNATURE, start):
            header = start + len(_MPF_SIGNATURE)  # the MP Header: offsets count from here
            return _mp_index(first[header:end], header)
    return []


def _mp_index(mp: bytes, header: int) -> list[tuple[int, int]]:
    """Entries of the MP Index IFD in ``mp`` (the MP Header onwards, DC-007 §5.2.2-5.2.3)."""
    # The MP Header is a TIFF header: byte order, 42, offset of the first IFD.
    if mp.startswith(b"II*\x00"):
        order = "<"
    elif mp.startswith(b"MM\x00*"):
        order = ">"
    else:
        return []
    try:
        (ifd,) = struct.unpack_from(order + "I", mp, 4)
        (count,) = struct.unpack_from(order + "H", mp, ifd)
        for index in range(count):
            tag, _type, length, offset = struct.unpack_from(
                order + "HHII", mp, ifd + 2 + index * _IFD_ENTRY_SIZE
            )
            if tag == _MP_ENTRY_TAG:
                # Undefined bytes longer than 4 live at ``offset``; clip a
                # count that runs past the segment.
                table = mp[offset : offset + length]
                entries = []
                for entry in range(len(table) // _MP_ENTRY_SIZE):
                    _attribute, size, data_offset = struct.unpack_from(
                        order + "III", table, entry * _MP_ENTRY_SIZE
                    )
                    if data_offset:  # 0 is the first picture itself (§5.2.3.3.3)
                        entries.append((header + data_offset, size))
                return entries
    except struct.error:
        pass  # the index ends early: no entries can be trusted to be complete
    return []
