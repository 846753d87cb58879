"""The marker structure of a JPEG file (ITU-T T.81 §B.1.1): where its first picture ends.

mozjpeg's optimizer re-encodes the first picture only and drops whatever
follows its EOI: the other pictures of a multi-picture file (MPO), or bytes
a camera appended (a video, a thumbnail). Such a file is stored as received,
so the optimizer is offered only JPEGs that end where their picture ends.
"""

from __future__ import annotations

import re

# Where entropy-coded JPEG data ends: a 0xFF that is not a stuffed 0xFF00, a
# restart marker or a fill byte (ITU-T T.81 §B.1.1.5, §F.1.2.3).
_ENTROPY_CODED_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def jpeg_length(data: bytes) -> int | None:
    """Offset just past the EOI that ends the first picture in ``data``; None if there is none.

    Follows the marker segments of ITU-T T.81 §B.1.1, skipping the
    entropy-coded data after each SOS.
    """
    pos = 2  # after SOI
    while pos + 1 < len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xD9:  # EOI
            return pos + 2
        if marker == 0xFF:  # fill byte (§B.1.1.2)
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            pos += 2
            continue
        if pos + 4 > len(data):
            return None
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:  # SOS: skip the entropy-coded segment
            found = _ENTROPY_CODED_END.search(data, pos)
            if found is None:
                return None
            pos = found.start()
    return None
