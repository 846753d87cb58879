"""Sizes in bytes as operators write them: ``500MB``, ``2GiB``, ``1.5 TB``, ``1048576``.

A leaf (settings and commands import it; it imports nothing of ours). Units
are decimal (kB, MB, GB, TB: powers of 1000) or binary (KiB, MiB, GiB, TiB:
powers of 1024), in any case; a bare number is bytes. Anything else is
refused rather than guessed: ``5M`` could mean either.
"""

from __future__ import annotations

import re
from decimal import Decimal

UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
# What a PositiveBigIntegerField (and PostgreSQL's bigint) holds.
LARGEST = 2**63 - 1
SIZE = re.compile(r"(\d+(?:\.\d+)?) ?([a-z]*)", re.IGNORECASE | re.ASCII)
UNITS_HELP = "bytes, or with a unit: kB MB GB TB (powers of 1000), KiB MiB GiB TiB (of 1024)"


def parse_size(text: str) -> int:
    """The number of bytes ``text`` says; ValueError naming what is wrong with it."""
    match = SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a size ({UNITS_HELP})")
    number, unit = match.groups()
    factor = UNITS.get(unit.lower())
    if factor is None:
        raise ValueError(f"{text!r}: unknown unit {unit!r} ({UNITS_HELP})")
    size = Decimal(number) * factor
    if size != size.to_integral_value():
        raise ValueError(f"{text!r} is not a whole number of bytes")
    if size > LARGEST:
        raise ValueError(f"{text!r} is more than {LARGEST} bytes")
    return int(size)


def size_text(size: int) -> str:
    """``size`` in the largest unit that states it exactly (``2 GiB``, ``500 MB``, ``1234 B``)."""
    exact = [(factor, unit) for unit, factor in UNITS.items() if unit and size % factor == 0]
    if size == 0 or not exact:
        return f"{size} B"
    factor, unit = max(exact)
    return f"{size // factor} {_spelling(unit)}"


def _spelling(unit: str) -> str:
    return {"b": "B", "kb": "kB"}.get(unit, unit[0].upper() + unit[1:-1] + "B")
