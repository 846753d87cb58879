"""HTTP byte ranges (RFC 9110 §14).

Django has no Range support for ordinary responses, so this small parser is
ours. At most ``MAX_RANGES`` ranges are served; more is refused with 416, as
§14.2 allows for "many small ranges" (a known amplification attack).
"""

from __future__ import annotations

import re

MAX_RANGES = 16
_SPEC = re.compile(r"\s*(\d*)\s*-\s*(\d*)\s*", re.ASCII)
# Positions past any image we store; longer digit strings mean the same and
# must not reach int() (which refuses more than 4,300 digits).
_HUGE = 10**18


def _position(digits: str) -> int:
    return _HUGE if len(digits) > 18 else int(digits)


class RangeNotSatisfiable(ValueError):
    """No range can be served (416)."""


def parse_range(header: str, size: int) -> list[tuple[int, int]] | None:
    """Inclusive ``(first, last)`` byte positions, or ``None`` to send it all.

    A header we do not understand (another unit, bad syntax) is ignored, as
    §14.2 says; ranges wholly past the end are dropped, and if none is left
    the request is not satisfiable.
    """
    unit, sep, specs = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    parts = specs.split(",")
    if len(parts) > MAX_RANGES:
        raise RangeNotSatisfiable(f"at most {MAX_RANGES} ranges are served")
    ranges = []
    for part in parts:
        match = _SPEC.fullmatch(part)
        if match is None or match.group(1) == match.group(2) == "":
            return None
        first, last = match.group(1), match.group(2)
        if first == "":  # suffix range: the last N bytes
            length = _position(last)
            if length == 0:
                continue
            ranges.append((max(size - length, 0), size - 1))
            continue
        start = _position(first)
        end = size - 1 if last == "" else min(_position(last), size - 1)
        if last != "" and _position(last) < start:
            return None
        if start < size:
            ranges.append((start, end))
    if not ranges:
        raise RangeNotSatisfiable("no requested range overlaps the image")
    return ranges
