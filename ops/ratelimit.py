"""Request rate limits over a shared counter store (Django's cache framework).

Pure logic, no HTTP or CoAP: a front end names what it counts (a device, a
client address) and gets back either "go ahead" or how many seconds to wait,
which HTTP sends as ``429`` with ``Retry-After`` (RFC 6585 §4) and CoAP can
send as ``4.29`` with Max-Age (RFC 8516).

The window slides: a count is kept per fixed window of ``seconds`` and the
previous window's count is weighted by how much of it still overlaps the
last ``seconds`` (the estimate is exact when hits are spread evenly). So a
burst that straddles a window boundary is still seen as one burst, and
``limit`` hits in any ``seconds`` is the most that gets through (in steady
state). Counters live in the cache (``cache.add`` then ``cache.incr``: atomic
in locmem and in Redis, so every worker process sharing a Redis sees the same
counts); refused hits are not counted, so a client that waits as told gets
through.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import time
from dataclasses import dataclass
from typing import Any, Protocol


class CounterStore(Protocol):
    """The part of Django's cache API the limiter uses."""

    def add(self, key: str, value: Any, timeout: float | None = ...) -> bool: ...
    def incr(self, key: str, delta: int = ...) -> int: ...
    def decr(self, key: str, delta: int = ...) -> int: ...
    def get(self, key: str, default: Any = ...) -> Any: ...


@dataclass(frozen=True)
class Rate:
    """At most ``limit`` hits in any ``seconds``."""

    limit: int
    seconds: int


@functools.cache
def parse_rate(text: str) -> Rate | None:
    """``"120/60"`` (hits/seconds) as a :class:`Rate`; ``""``, ``"0"``, ``"off"``: None (no limit).

    Raises ``ValueError`` for anything else, so a typo in a setting fails at start-up.
    """
    text = text.strip().lower()
    if text in ("", "0", "off"):
        return None
    count, sep, seconds = text.partition("/")
    try:
        rate = Rate(int(count), int(seconds)) if sep else None
    except ValueError:
        rate = None
    if rate is None or rate.limit < 1 or rate.seconds < 1:
        raise ValueError(f"a rate is HITS/SECONDS with both at least 1 (e.g. 120/60), not {text!r}")
    return rate


def rate_hit(
    store: CounterStore, *, scope: str, identity: str, rate: Rate, now: float | None = None
) -> int | None:
    """Count one hit of ``identity`` in ``scope``; None if it is allowed, else seconds to wait.

    ``identity`` may be any string (a device id, an address): keys hold only
    its SHA-256, so any cache backend accepts them. A refused hit is taken
    back, and the wait returned is when the next hit would be allowed if
    nothing else arrived meanwhile (at least 1 second).
    """
    now = time.time() if now is None else now
    window = math.floor(now / rate.seconds)
    elapsed = now - window * rate.seconds
    name = hashlib.sha256(identity.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    current_key = f"ratelimit:v1:{scope}:{name}:{window}"
    previous_key = f"ratelimit:v1:{scope}:{name}:{window - 1}"
    # Kept two windows: the next window still weighs this one.
    store.add(current_key, 0, timeout=2 * rate.seconds + 1)
    try:
        current = store.incr(current_key)
    except ValueError:
        # Evicted between add and incr (a full cache): start the window again.
        store.add(current_key, 1, timeout=2 * rate.seconds + 1)
        current = 1
    previous = int(store.get(previous_key) or 0)
    weight = (rate.seconds - elapsed) / rate.seconds
    if previous * weight + current <= rate.limit:
        return None
    with contextlib.suppress(ValueError):  # expired meanwhile: nothing left to take back
        store.decr(current_key)
    return _wait(rate, previous=previous, current=current - 1, elapsed=elapsed)


def _wait(rate: Rate, *, previous: int, current: int, elapsed: float) -> int:
    """Seconds until ``previous * weight + current + 1 <= limit`` with no further hits."""
    room = rate.limit - 1
    if current <= room and previous > 0:
        # This window has room; wait for the previous one to weigh less.
        seconds = rate.seconds * (1 - (room - current) / previous) - elapsed
    else:
        # This window is full: wait for it to become the previous one, then
        # for enough of it to slide out.
        until_next = rate.seconds - elapsed
        seconds = until_next + (rate.seconds * (1 - room / current) if current else 0)
    return max(1, math.ceil(seconds))
