"""The child end of :mod:`images.compression.mozjpeg`: optimize the JPEGs read from stdin.

Run as a script (``python -P mozjpeg_child.py``), never imported. A request is
an 8-byte big-endian length and that many bytes of JPEG; the answer is an
8-byte length and mozjpeg's lossless optimization of it, every marker copied,
or length 0 when mozjpeg's decoder refuses it. The end of stdin ends the
process. When mozjpeg's encoder meets data it cannot write it calls exit(),
which ends this process in the middle of a request: the parent sees its pipe
close.
"""

from __future__ import annotations

import os
import sys
from typing import BinaryIO

import mozjpeg_lossless_optimization as mozjpeg

_HEADER_BYTES = 8


def main() -> None:
    # Answers go to a private copy of stdout and fd 1 becomes stderr, so
    # nothing a library prints can be mistaken for an answer.
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = sys.stdin.buffer
    while len(header := requests.read(_HEADER_BYTES)) == _HEADER_BYTES:
        answer(requests.read(int.from_bytes(header, "big")), answers)


def answer(data: bytes, answers: BinaryIO) -> None:
    # A function of its own, so that neither image outlives the request: an
    # idle child holds no memory for the last one.
    try:
        optimized = mozjpeg.optimize(data, copy=mozjpeg.COPY_MARKERS.ALL)
    except ValueError:  # its decoder's error: the input is not a JPEG it can read
        optimized = b""
    answers.write(len(optimized).to_bytes(_HEADER_BYTES, "big"))
    answers.write(optimized)
    answers.flush()


if __name__ == "__main__":
    main()
