"""The marker structure of a JPEG file (ITU-T T.81 §B.1.1): where its first picture ends.

mozjpeg's optimizer re-encodes the first picture only and drops whatever
follows its EOI: the other pictures of a multi-picture file (MPO), or bytes
a camera appended (a video, a thumbnail). Such a file is stored as received,
so the optimizer is offered only JPEGs that end where their picture ends.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

# Where entropy-coded JPEG data ends: a 0xFF that is not a stuffed 0xFF00, a
# restart marker or a fill byte (ITU-T T.81 §B.1.1.5, §F.1.2.3).
_ENTROPY_CODED_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def jpeg_length(data: bytes | memoryview) -> int | None:
    """Offset just past the EOI that ends the first picture in ``data``; None if there is none.

    Follows the marker segments of ITU-T T.81 §B.1.1, skipping the
    entropy-coded data after each SOS.
    """
    for marker, pos in _markers(data):
        if marker == _EOI:
            return pos + 2
    return None


def jpeg_scans(data: bytes | memoryview) -> int:
    """How many scans (SOS markers) the first picture in ``data`` has, up to its end or damage.

    Each scan is a pass of the decoder over the whole image (a progressive
    JPEG refines its coefficients scan by scan), so the scans times the
    pixels bound what decoding costs (API.md §15). Counted from the markers
    alone, skipping entropy-coded data with one regular-expression search
    per scan: a 50 MB file is walked in milliseconds.
    """
    return sum(1 for marker, _ in _markers(data) if marker == _SOS)


_SOS = 0xDA
_EOI = 0xD9


def _markers(data: bytes | memoryview) -> Iterator[tuple[int, int]]:
    """Each marker of the first picture after its SOI, with its offset, up to its EOI.

    Stops early (without an EOI) where the structure is broken or cut short.
    """
    pos = 2  # after SOI
    while pos + 1 < len(data):
        if data[pos] != 0xFF:
            return
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte (§B.1.1.2)
            pos += 1
            continue
        yield marker, pos
        if marker == _EOI:
            return
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            pos += 2
            continue
        if pos + 4 > len(data):
            return
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == _SOS:  # skip the entropy-coded segment
            found = _ENTROPY_CODED_END.search(data, pos)
            if found is None:
                return
            pos = found.start()
