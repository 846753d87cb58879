"""Import's members waiting for their pair (API.md §15 "Archives"): what is held, and its caps.

An export writes each image and right after it ``<same name>.json``, its
metadata, so on import one member waits for its pair at a time. A hostile
archive may send members that never pair, or metadata that parses to
millions of Python objects (1 MiB of ``[{},{},...]`` is about 30 MB of
them). So a metadata member is parsed and checked the moment it is read
(:func:`metadata_record`), and only the small record it yields waits, never
the parsed document; an image waits spooled (:mod:`.tarball` spools it).
:class:`Waiting` holds both, counting every member and the bytes each
holds, and lets the oldest go past either cap.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import IO

from rest_framework.exceptions import ValidationError

from images.serializers import ImageKeySerializer, validated

# API.md §15: 1 MiB for a metadata member. What exportimages writes is 475
# bytes for a plain device id and 1,670 at most (100 astral characters).
# Parsed, 1 MiB is at most about 30 MB of Python objects (``[{},{},...]``),
# held only while it is checked, one member at a time: only a small record
# of its fields waits for its image.
METADATA_MAX_BYTES = 1 << 20
# An export pairs each image with the next member; these bound an archive
# that never pairs them: members waiting, and the bytes they hold.
WAITING_MAX_MEMBERS = 16
WAITING_MAX_BYTES = 256 << 20
_SIZE_MAX = 2**63 - 1
# A record's fields, its name and the dict entry that holds it, besides the
# text of its device id and name (a generous round figure: about 400).
_RECORD_BYTES = 512


@dataclass(frozen=True)
class Record:
    """What an import needs of a metadata member, checked: all that waits for its image."""

    device_id: str
    timestamp: datetime
    sha256: str | None
    original_size: int | None


# Waits in the place of a member that was refused (and reported), so that
# its pair is let go without being reported a second time.
REFUSED = None


def metadata_record(raw: bytes) -> Record:
    """The record of a metadata member's bytes; ``ValueError`` saying what is wrong with them.

    The member must be a JSON object with a valid ``deviceId`` and
    ``timestamp``; ``sha256`` and ``originalSize``, when present, are typed
    and ranged. Other fields (an export's ``id``, ``href``...) are ignored.
    """
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python's stack
        raise ValueError("not valid JSON") from None
    if not isinstance(document, dict):
        raise ValueError("its metadata is not a JSON object")
    try:
        key = validated(ImageKeySerializer, document)
    except ValidationError as exc:
        raise ValueError(_said(exc.detail)) from None
    return Record(
        device_id=key["device_id"],
        timestamp=key["timestamp"],
        sha256=_checked_sha256(document.get("sha256")),
        original_size=_checked_size(document.get("originalSize")),
    )


def _said(detail: object) -> str:
    """DRF's errors by field, as one line: ``deviceId: This field is required.``."""
    if not isinstance(detail, dict):
        return str(detail)
    return "; ".join(
        f"{field}: {' '.join(map(str, errors if isinstance(errors, list) else [errors]))}"
        for field, errors in detail.items()
    )


def _checked_size(value: object) -> int | None:
    """``originalSize`` as the contract says: an integer from 0 to 2^63 - 1 (API.md §15)."""
    if value is None:
        return None
    if type(value) is not int or not 0 <= value <= _SIZE_MAX:
        raise ValueError(
            f"originalSize must be an integer from 0 to {_SIZE_MAX}, not {value!r:.40}"
        )
    return value


def _checked_sha256(value: object) -> str | None:
    """``sha256``: 64 hex digits, or absent."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != 64 or value.strip("0123456789abcdef"):
        raise ValueError(f"sha256 must be 64 lowercase hex digits, not {value!r:.80}")
    return value


@dataclass
class _Held:
    spool: IO[bytes] | None  # an image member's bytes (REFUSED: reported already)
    record: Record | None  # a metadata member's record (REFUSED: reported already)
    is_image: bool
    size: int  # bytes held, as counted against the cap

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()


class Waiting:
    """Members waiting for their pair, by name without ``.json``, oldest first.

    :meth:`image` and :meth:`metadata` take a member (``REFUSED`` for one
    reported already) and answer the pair once both halves are in, else
    ``None``. ``refuse(member name, why)`` reports a member let go.
    """

    def __init__(self, refuse: Callable[[str, str], None]) -> None:
        self._refuse = refuse
        self._held: dict[str, _Held] = {}
        self.bytes = 0  # everything held: spooled images, records, names

    def image(self, name: str, spool: IO[bytes] | None) -> tuple[IO[bytes], Record] | None:
        """``name``'s image arrived: the pair, or ``None`` while its metadata is to come."""
        size = len(name) + (0 if spool is None else _size(spool))
        return self._arrived(name, _Held(spool, REFUSED, True, size))

    def metadata(self, name: str, record: Record | None) -> tuple[IO[bytes], Record] | None:
        """``name``'s metadata arrived: the pair, or ``None`` while its image is to come."""
        size = len(name) + (0 if record is None else _RECORD_BYTES + 4 * len(record.device_id))
        return self._arrived(name, _Held(REFUSED, record, False, size))

    def leftovers(self) -> list[tuple[str, str]]:
        """Let go of every member still waiting; (name, why) of each not reported yet, by name."""
        said = []
        for name in sorted(self._held):
            held = self._pop(name)
            held.close()
            if held.spool is not None:
                said.append((name, "no metadata member"))
            elif held.record is not REFUSED:
                said.append((name, "no image member"))
        return said

    def _arrived(self, name: str, half: _Held) -> tuple[IO[bytes], Record] | None:
        other = self._held.get(name)
        if other is None or other.is_image == half.is_image:
            self._hold(name, half)
            return None
        self._pop(name)
        image, metadata = (half, other) if half.is_image else (other, half)
        if image.spool is None or metadata.record is None:
            image.close()  # one half was refused, and reported
            return None
        return image.spool, metadata.record

    def _hold(self, name: str, held: _Held) -> None:
        if name in self._held:
            self._let_go(name, "another member of the same name follows it")
        self._held[name] = held
        self.bytes += held.size
        while len(self._held) > WAITING_MAX_MEMBERS or self.bytes > WAITING_MAX_BYTES:
            oldest = next(iter(self._held))
            missing = "metadata" if self._held[oldest].is_image else "image"
            self._let_go(oldest, f"no {missing} member next to it")

    def _let_go(self, name: str, why: str) -> None:
        held = self._pop(name)
        held.close()
        if held.spool is not None:
            self._refuse(name, why)
        elif held.record is not REFUSED:
            self._refuse(f"{name}.json", why)

    def _pop(self, name: str) -> _Held:
        held = self._held.pop(name)
        self.bytes -= held.size
        return held


def _size(spool: IO[bytes]) -> int:
    position = spool.tell()
    size = spool.seek(0, io.SEEK_END)
    spool.seek(position)
    return size
