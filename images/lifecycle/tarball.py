"""Export and import: a device's images as one tar file (API.md §11).

The layout: for each image in time order, its stored bytes named as its
download's file name (the ASCII-safe form, so no member escapes its
directory), and beside it ``<same name>.json``, its metadata as the API
serves it. Written with :mod:`tarfile` in stream mode ("w|"), so an export
holds one piece of one image in memory whatever the device holds; read the
same way on import, each image spooled to a temporary file until its
metadata member arrives.

Import keeps each image's ``deviceId``, ``timestamp`` and bytes (so its
``sha256``): the bytes are checked (they must decode as the image they
claim to be) but not optimized again. It is idempotent: an image already
there with the same bytes is skipped, one with other bytes is a conflict,
reported and left alone. Each image commits on its own, so an interrupted
import loses nothing it had stored, and running it again finishes the job.
"""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from rest_framework.exceptions import ValidationError

from images import selectors, services, storage
from images.errors import DomainError
from images.filenames import safe_filename_for, safe_name
from images.models import Image
from images.serializers import ImageKeySerializer, image_metadata, validated

_PAGE = 200
_SPOOL_IN_MEMORY = 1 << 20
# Hostile archives (API.md §15). A metadata member is a few hundred bytes.
_METADATA_MAX_BYTES = 1 << 20
# An export puts each image's metadata right after it, so one member waits
# for its pair at a time; these bound an archive that never pairs them.
_WAITING_MAX_MEMBERS = 16
_WAITING_MAX_BYTES = 256 << 20
# A compressed archive of images hardly shrinks (they are compressed
# already): past this ratio of bytes unpacked to bytes read, with this much
# unpacked, it is a decompression bomb.
_UNPACKED_MAX_RATIO = 50
_UNPACKED_ALLOWANCE = 64 << 20
# The most a pax or GNU long-name header may hold (tarfile reads it whole).
_HEADER_MAX_BYTES = 1 << 20
_SIZE_MAX = 2**63 - 1


# --- Export -------------------------------------------------------------------


def device_images_all(
    device_id: str, start: datetime | None = None, end: datetime | None = None
) -> Iterator[Image]:
    """Every image of a device in time order, ``start`` <= timestamp < ``end``, page by page.

    :class:`images.errors.ImageNotFound` when the device has no images.
    """
    after = None
    while True:
        page = selectors.device_images(
            device_id=device_id, start=start, end=end, after=after, limit=_PAGE
        )
        yield from page.items
        if not page.has_more:
            return
        after = page.items[-1].timestamp


def all_images(start: datetime | None = None, end: datetime | None = None) -> Iterator[Image]:
    """Every image, device by device (in id order), each device's in time order."""
    after = None
    while True:
        devices = selectors.device_list(after=after, limit=_PAGE)
        for device in devices.items:
            yield from device_images_all(device.device_id, start, end)
        if not devices.has_more:
            return
        after = devices.items[-1].device_id


class _Pipe(io.RawIOBase):
    """What tarfile writes, handed out piece by piece to whoever iterates the export."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.pieces.append(bytes(data))
        return len(data)

    def drain(self) -> Iterator[bytes]:
        pieces, self.pieces = self.pieces, []
        yield from pieces


class _PiecesFile(io.RawIOBase):
    """A read-only file over an iterator of pieces (an image streamed from storage)."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._rest = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._rest:
            try:
                self._rest = next(self._pieces)
            except StopIteration:
                return 0
        count = min(len(buffer), len(self._rest))
        buffer[:count] = self._rest[:count]
        self._rest = self._rest[count:]
        return count


def tarball_stream(images: Iterator[Image]) -> Iterator[bytes]:
    """The tar archive of ``images``, as it is written.

    Its memory does not grow with the number of images: tarfile's list of
    members written is emptied as it goes (nothing reads it in stream
    mode), and names are kept apart by device, not by remembering them.
    """
    pipe = _Pipe()
    owners: dict[str, str] = {}
    with tarfile.open(fileobj=pipe, mode="w|", format=tarfile.PAX_FORMAT) as archive:
        for image in images:
            name = _unique(safe_filename_for(image), image, owners)
            mtime = image.modified_at.timestamp()
            member = tarfile.TarInfo(name)
            member.size, member.mtime, member.mode = image.stored_size, mtime, 0o644
            archive.addfile(member, _PiecesFile(storage.image_pieces(image)))
            yield from pipe.drain()
            metadata = json.dumps(image_metadata(image), indent=1).encode() + b"\n"
            member = tarfile.TarInfo(f"{name}.json")
            member.size, member.mtime, member.mode = len(metadata), mtime, 0o644
            archive.addfile(member, io.BytesIO(metadata))
            archive.members.clear()
            yield from pipe.drain()
    yield from pipe.drain()


def _unique(name: str, image: Image, owners: dict[str, str]) -> str:
    # Two device ids can make the same safe name ("a/b" and "a_b"); a
    # device's own images never share a name (one image per timestamp).
    # The first device to use a safe device id keeps the plain names; the
    # others' images get their image id before the extension.
    owner = owners.setdefault(safe_name(image.device_id), image.device_id)
    if owner != image.device_id:
        stem, dot, extension = name.rpartition(".")
        name = f"{stem}-{image.id}{dot}{extension}"
    return name


# --- Import -------------------------------------------------------------------


@dataclass
class ImportReport:
    stored: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)


class TarballUnreadable(Exception):
    """The file is not a tar archive, or it ends before its last member does."""


def tarball_import(
    stream: IO[bytes], *, progress: Callable[[str, str], None] | None = None
) -> ImportReport:
    """Store every image of an export read from ``stream``; see the module docstring.

    ``progress(member name, outcome)`` is called for each image as it is
    done. Raises :class:`TarballUnreadable` (after storing every image that
    came before) for a file that is not a tar archive or is cut short.
    """
    report = ImportReport()
    images: dict[str, IO[bytes]] = {}
    metadata: dict[str, dict[str, Any]] = {}

    def done(name: str, outcome: str) -> None:
        if progress is not None:
            progress(name, outcome)

    def refuse(name: str, why: str) -> None:
        report.problems.append((name, why))
        done(name, why)

    tail = _Tail(stream)
    image_max = services.limits_current().max_bytes
    try:
        with tarfile.open(fileobj=tail, mode="r|*", tarinfo=_BoundedTarInfo) as archive:
            compressed = getattr(archive.fileobj, "comptype", "tar") != "tar"
            for member in archive:
                if compressed and _unpacks_too_much(member, tail.count):
                    raise TarballUnreadable(
                        "it unpacks to far more than its own size: refused as a decompression bomb"
                    )
                if not member.isfile():
                    continue
                base = member.name.removesuffix(".json")
                is_metadata = member.name.endswith(".json")
                # Judged from the member's header, before its bytes are read.
                limit = _METADATA_MAX_BYTES if is_metadata else image_max
                if member.size > limit:
                    refuse(member.name, f"{member.size:,} bytes; the limit is {limit:,}")
                    continue
                content = archive.extractfile(member)
                assert content is not None  # a regular file always has content
                if is_metadata:
                    try:
                        metadata[base] = json.loads(content.read())
                    except (ValueError, UnicodeDecodeError):
                        refuse(member.name, "not valid JSON metadata")
                        continue
                else:
                    images[base] = _spooled(content)
                if base in images and base in metadata:
                    outcome = _import_one(base, images.pop(base), metadata.pop(base), report)
                    done(base, outcome)
                _unpaired(images, metadata, refuse)
            uncompressed = not compressed
        if uncompressed and not tail.ended_with_zero_blocks():
            # tarfile takes a stream that stops at a member boundary for the
            # end; a whole archive ends with two zero blocks (POSIX ustar).
            raise TarballUnreadable("not a complete tar archive: it ends before its end marker")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise TarballUnreadable(f"not a complete tar archive: {exc}") from None
    finally:
        for leftover in images.values():
            leftover.close()
    for name in sorted(images.keys() | metadata.keys()):
        what = "no metadata member" if name in images else "no image member"
        report.problems.append((name, what))
        done(name, what)
    return report


class _Tail(io.RawIOBase):
    """A reader that remembers the last bytes of its stream, to see how the tarball ended."""

    _KEEP = 2 * tarfile.BLOCKSIZE

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._last = b""
        self.count = 0  # bytes read from the stream so far

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        self.count += len(data)
        if data:
            self._last = (self._last + data)[-self._KEEP :]
        return len(data)

    def ended_with_zero_blocks(self) -> bool:
        while self.read(1 << 16):  # what tarfile left unread: the rest of the last record
            pass
        return len(self._last) == self._KEEP and not any(self._last)


class _BoundedTarInfo(tarfile.TarInfo):
    """A member header whose extended headers are refused past a size, before they are read.

    tarfile reads a pax header or a GNU long name whole into memory; a
    hostile one declaring 200 MiB took 512 MB. These are tarfile's own
    hooks for those headers (private, the same from Python 3.11 to 3.13).
    """

    def _proc_pax(self, archive: Any) -> tarfile.TarInfo:
        if self.size > _HEADER_MAX_BYTES:
            raise tarfile.HeaderError(f"a {self.size:,}-byte extended header")
        return super()._proc_pax(archive)  # type: ignore[misc]

    def _proc_gnulong(self, archive: Any) -> tarfile.TarInfo:
        if self.size > _HEADER_MAX_BYTES:
            raise tarfile.HeaderError(f"a {self.size:,}-byte long name")
        return super()._proc_gnulong(archive)  # type: ignore[misc]


def _unpacks_too_much(member: tarfile.TarInfo, read: int) -> bool:
    """Whether going past ``member`` unpacks far more than the archive's bytes read so far.

    Even a refused member is unpacked to reach the next one (a stream has no
    seek), so its declared size is judged before that.
    """
    unpacked = member.offset_data + member.size
    return unpacked > _UNPACKED_ALLOWANCE and unpacked > _UNPACKED_MAX_RATIO * max(read, 1)


def _size(spool: IO[bytes]) -> int:
    position = spool.tell()
    size = spool.seek(0, io.SEEK_END)
    spool.seek(position)
    return size


def _unpaired(
    images: dict[str, IO[bytes]],
    metadata: dict[str, dict[str, Any]],
    refuse: Callable[[str, str], None],
) -> None:
    """Let go of the oldest members waiting for their pair, past the caps (count and bytes)."""
    waiting = sum(_size(spool) for spool in images.values())
    while images and (
        len(images) + len(metadata) > _WAITING_MAX_MEMBERS or waiting > _WAITING_MAX_BYTES
    ):
        name = next(iter(images))
        spool = images.pop(name)
        waiting -= _size(spool)
        spool.close()
        refuse(name, "no metadata member next to it")
    while len(metadata) > _WAITING_MAX_MEMBERS:
        name = next(iter(metadata))
        del metadata[name]
        refuse(f"{name}.json", "no image member next to it")


def _spooled(content: IO[bytes]) -> IO[bytes]:
    # Closed by the caller.
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)  # noqa: SIM115
    while piece := content.read(1 << 16):
        spool.write(piece)
    spool.seek(0)
    return spool


def _import_one(name: str, data: IO[bytes], metadata: dict[str, Any], report: ImportReport) -> str:
    with data:
        try:
            if not isinstance(metadata, dict):
                raise ValueError("its metadata is not a JSON object")
            key = validated(ImageKeySerializer, metadata)
            result = services.image_import(
                **key,
                data=data,
                expected_sha256=_checked_sha256(metadata.get("sha256")),
                original_size=_checked_size(metadata.get("originalSize")),
            )
        except ValidationError as exc:
            report.problems.append((name, f"bad metadata: {exc.detail}"))
            return "bad metadata"
        except ValueError as exc:
            report.problems.append((name, f"bad metadata: {exc}"))
            return "bad metadata"
        except DomainError as exc:
            report.problems.append((name, exc.message))
            return type(exc).__name__
    (report.stored if result.created else report.already).append(name)
    return "stored" if result.created else "already there"


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
