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

import bz2
import gzip
import io
import json
import lzma
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from images import selectors, services, storage
from images.errors import DomainError
from images.filenames import safe_filename_for, safe_name
from images.lifecycle.tarball_pairs import METADATA_MAX_BYTES, REFUSED, Record, Waiting
from images.lifecycle.tarball_pairs import metadata_record as _metadata_record
from images.models import Image
from images.serializers import image_metadata

_PAGE = 200
_SPOOL_IN_MEMORY = 1 << 20
# Hostile archives (API.md §15): members waiting for their pair, and the
# metadata limit, are in :mod:`.tarball_pairs`.
# A compressed archive of images hardly shrinks (they are compressed
# already): past this ratio of bytes unpacked to bytes read, with this much
# unpacked, it is a decompression bomb.
_UNPACKED_MAX_RATIO = 50
_UNPACKED_ALLOWANCE = 64 << 20
# The most a pax or GNU long-name header may hold (tarfile reads it whole).
_HEADER_MAX_BYTES = 1 << 20


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

    def done(name: str, outcome: str) -> None:
        if progress is not None:
            progress(name, outcome)

    def refuse(name: str, why: str) -> None:
        report.problems.append((name, why))
        done(name, why)

    waiting = Waiting(refuse)
    tail = _Tail(stream)
    image_max = services.limits_current().max_bytes
    try:
        unpacked, compressed = _unpacking(tail)
        with tarfile.open(fileobj=unpacked, mode="r|", tarinfo=_BoundedTarInfo) as archive:
            for member in archive:
                if compressed and _unpacks_too_much(member, tail.count):
                    raise TarballUnreadable(
                        "it unpacks to far more than its own size: refused as a decompression bomb"
                    )
                if member.isfile():
                    pair = _member_read(archive, member, image_max, waiting, refuse)
                    if pair is not None:
                        name = member.name.removesuffix(".json")
                        done(name, _import_one(name, *pair, report))
            uncompressed = not compressed
        if uncompressed and not tail.ended_with_zero_blocks():
            # tarfile takes a stream that stops at a member boundary for the
            # end; a whole archive ends with two zero blocks (POSIX ustar).
            raise TarballUnreadable("not a complete tar archive: it ends before its end marker")
    except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
        raise TarballUnreadable(f"not a complete tar archive: {exc}") from None
    finally:
        leftovers = waiting.leftovers()
    for name, what in leftovers:
        refuse(name, what)
    return report


def _member_read(
    archive: tarfile.TarFile,
    member: tarfile.TarInfo,
    image_max: int,
    waiting: Waiting,
    refuse: Callable[[str, str], None],
) -> tuple[IO[bytes], Record] | None:
    """Read one regular member into ``waiting``; the pair it completes, if it does.

    Its size is judged from its header, before its bytes are read. A
    metadata member is checked at once and only its record is kept; a bad
    one is reported by its image's name. A member refused is reported once:
    its pair is let go without a word.
    """
    name = member.name.removesuffix(".json")
    is_metadata = member.name.endswith(".json")
    limit = METADATA_MAX_BYTES if is_metadata else image_max
    if member.size > limit:
        refuse(member.name, f"{member.size:,} bytes; the limit is {limit:,}")
        return (waiting.metadata if is_metadata else waiting.image)(name, REFUSED)
    content = archive.extractfile(member)
    assert content is not None  # a regular file always has content
    if not is_metadata:
        return waiting.image(name, _spooled(content))
    try:
        record = _metadata_record(content.read())
    except ValueError as exc:
        refuse(name, f"bad metadata: {exc}")
        record = REFUSED
    return waiting.metadata(name, record)


# What a compressed archive starts with, and the reader that unpacks it.
_UNPACKERS: tuple[tuple[bytes, Callable[[IO[bytes]], IO[bytes]]], ...] = (
    (b"\x1f\x8b", lambda raw: gzip.GzipFile(fileobj=raw, mode="rb")),
    (b"BZh", bz2.BZ2File),
    (b"\xfd7zXZ\x00", lzma.LZMAFile),
)


def _unpacking(raw: io.RawIOBase) -> tuple[IO[bytes], bool]:
    """``raw`` unpacked as it is read, and whether it is compressed (gzip, bzip2 or xz).

    Not tarfile's own "r|*": it hands each block it reads (10 KiB) to the
    decompressor whole, and bzip2 packs 1 GiB of zeros into 853 bytes, so
    one block unpacked to 1 GiB at once (importimages peaked at 1.8 GiB).
    These readers unpack at most what is asked of them at a time.
    """
    buffered = io.BufferedReader(raw)
    start = buffered.peek(6)
    for magic, unpacker in _UNPACKERS:
        if start.startswith(magic):
            return unpacker(buffered), True
    return buffered, False


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


def _spooled(content: IO[bytes]) -> IO[bytes]:
    # Closed by the caller.
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)  # noqa: SIM115
    while piece := content.read(1 << 16):
        spool.write(piece)
    spool.seek(0)
    return spool


def _import_one(name: str, data: IO[bytes], record: Record, report: ImportReport) -> str:
    with data:
        try:
            result = services.image_import(
                device_id=record.device_id,
                timestamp=record.timestamp,
                data=data,
                expected_sha256=record.sha256,
                original_size=record.original_size,
            )
        except DomainError as exc:
            report.problems.append((name, exc.message))
            return type(exc).__name__
    (report.stored if result.created else report.already).append(name)
    return "stored" if result.created else "already there"
