"""RFC 3339 date-times, as the contract reads them.

Written here rather than using ``datetime.fromisoformat`` because that parser
changes between Python 3.11 and 3.13 and accepts forms the contract rejects
(more than six fractional digits, week dates, times without seconds), while it
rejects ones RFC 3339 §5.6 allows (a lowercase ``t``/``z``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

_PATTERN = re.compile(
    r"""
    (?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})
    [Tt\ ]
    (?P<hour>\d{2}):(?P<minute>\d{2}):(?P<second>\d{2})
    (?:\.(?P<fraction>\d+))?
    (?P<offset>
        [Zz]
      | (?P<sign>[-+\ ])(?P<off_hour>\d{2}):?(?P<off_minute>\d{2})
    )?
    """,
    re.VERBOSE | re.ASCII,
)


def parse_timestamp(text: str, *, space_means_plus: bool = False) -> datetime:
    """Parse an RFC 3339 date-time into an aware UTC ``datetime``.

    No offset means UTC. Up to six fractional digits. With
    ``space_means_plus`` (query strings), an offset introduced by a space is
    read as ``+``: a client that forgot to percent-encode ``+`` sent it as a
    space. Raises ``ValueError`` with a client-readable message.
    """
    match = _PATTERN.fullmatch(text)
    if match is None:
        raise ValueError("not an RFC 3339 date-time such as 2024-08-18T02:04:07Z")
    sign = match["sign"]
    if sign == " " and not space_means_plus:
        raise ValueError("not an RFC 3339 date-time such as 2024-08-18T02:04:07Z")
    fraction = match["fraction"] or ""
    if len(fraction) > 6:
        raise ValueError("a date-time has at most 6 fractional digits (microseconds)")
    year = int(match["year"])
    if year < 1:
        raise ValueError("a date-time year must be between 1 and 9999")
    tz = UTC
    if sign is not None:
        hours, minutes = int(match["off_hour"]), int(match["off_minute"])
        if hours > 23 or minutes > 59:
            raise ValueError("date-time offset out of range")
        delta = timedelta(hours=hours, minutes=minutes)
        tz = timezone(-delta if sign == "-" else delta)
    try:
        value = datetime(
            year,
            int(match["month"]),
            int(match["day"]),
            int(match["hour"]),
            int(match["minute"]),
            int(match["second"]),
            int(fraction.ljust(6, "0")) if fraction else 0,
            tzinfo=tz,
        )
        return value.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"not a valid date-time: {exc}") from None


def format_timestamp(value: datetime) -> str:
    """Render as UTC with a ``Z``; fractional seconds only when present."""
    return format_compact(value, date_sep="-", time_sep=":")


def format_compact(value: datetime, *, date_sep: str = "", time_sep: str = "") -> str:
    """UTC ``YYYYMMDDTHHMMSS[.ffffff]Z`` (file names), or with separators.

    Formatted by hand: ``strftime("%Y")`` does not zero-pad years below 1000
    on every platform.
    """
    v = value.astimezone(UTC)
    text = (
        f"{v.year:04d}{date_sep}{v.month:02d}{date_sep}{v.day:02d}"
        f"T{v.hour:02d}{time_sep}{v.minute:02d}{time_sep}{v.second:02d}"
    )
    if v.microsecond:
        text += f".{v.microsecond:06d}"
    return f"{text}Z"
