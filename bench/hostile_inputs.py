"""The hostile inputs of ``bench/hostile.py``, built here with Pillow, tarfile and by hand.

Each builder writes one file into a directory and returns its path; a file
already there is reused (they are deterministic), so a ``--compare`` run
builds them once for both trees. Nothing here imports the service or the
test suite: the same bytes go to the tree before the fixes and to this one.

- JPEGs: a progressive JPEG whose last scan (the luma AC refinement of
  libjpeg's progressive script) is repeated to a given number of scans: of
  its scans the costliest to repeat (a flat 20 MP picture: 13 ms of CPU
  per repeat against 1.5 for an AC first scan, in a few dozen bytes); and
  a JPEG whose multi-picture index lists thousands of pictures that Pillow
  never counts as frames (no MP "number of images" tag).
- A PNG at the pixel limit: 10,000 x 10,000 RGBA at 16 bits, all zero
  (800 MB of pixels in about 800 KB), written chunk by chunk.
- Tar files for ``importimages``: 300 image members without metadata, one
  600 MiB member packed with xz (about 90 KB), a 200 MiB pax header
  (gzip, about 200 KB), metadata members that parse to many objects, and
  metadata with bad ``originalSize`` fields before good pairs. The large
  ones are streamed, never held in memory.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import struct
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path

# Where a JPEG's entropy-coded data ends (ITU-T T.81 §B.1.1.5): a 0xFF that is
# not stuffed (0xFF00), a restart marker or a fill byte.
_ENTROPY_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def jpeg_scans(data: bytes) -> int:
    """The SOS markers of the first picture in ``data`` (a small walker of our own)."""
    pos, scans = 2, 0
    while pos + 3 < len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
        elif marker == 0xD9:
            break
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:
            pos += 2
        else:
            pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
            if marker == 0xDA:
                scans += 1
                found = _ENTROPY_END.search(data, pos)
                if found is None:
                    break
                pos = found.start()
    return scans


def _progressive(image: object) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90, progressive=True)  # type: ignore[attr-defined]
    return out.getvalue()


def gradient_jpeg(side: int) -> bytes:
    """A ``side`` x ``side`` progressive RGB JPEG (4:2:0, 10 scans) of three crossed gradients."""
    from PIL import Image

    ramp = Image.linear_gradient("L").resize((side, side))
    rotate = Image.Transpose
    bands = (ramp, ramp.transpose(rotate.ROTATE_90), ramp.transpose(rotate.ROTATE_180))
    return _progressive(Image.merge("RGB", bands))


def flat_jpeg(width: int, height: int) -> bytes:
    """A progressive grey JPEG of one shade: its refinement scans are a few dozen bytes each."""
    from PIL import Image

    return _progressive(Image.new("L", (width, height), 128))


def with_scans(jpeg: bytes, scans: int) -> bytes:
    """``jpeg`` with its last scan repeated until it has ``scans`` scans."""
    last = jpeg.rfind(b"\xff\xda")
    repeats = scans - jpeg_scans(jpeg)
    if repeats < 0:
        raise ValueError(f"the JPEG has {jpeg_scans(jpeg)} scans already")
    return jpeg[:-2] + jpeg[last:-2] * repeats + jpeg[-2:]


def mp_index_bomb(entries: int, picture: bytes) -> bytes:
    """A JPEG whose MP Index lists ``entries`` pictures, each a copy of ``picture`` appended.

    Every entry's size runs to the end of the file, so a walker that copies
    an entry's slice before looking at it copies half the file per entry.
    The index has no "number of images" tag: Pillow sees a plain JPEG.
    """
    first = flat_jpeg(64, 64)
    table_size = entries * 16
    # APP2: "MPF\0", the MP Header (big-endian TIFF header), one IFD entry, no next IFD.
    segment = 4 + 8 + 2 + 12 + 4 + table_size
    header = 2 + 4 + 4  # SOI, APP2 marker and length, "MPF\0": offsets count from here
    first_size = len(first) + 4 + segment  # APP2 marker and length, then the payload
    total = first_size + entries * len(picture)
    # Each entry: attribute, size, offset (from the MP Header), two dependent pictures.
    table = b"".join(
        struct.pack(">IIIHH", 0, total - start, start - header, 0, 0)
        for start in range(first_size, total, len(picture))
    )
    ifd = struct.pack(">H", 1) + struct.pack(">HHII", 0xB002, 7, table_size, 26) + bytes(4)
    payload = b"MPF\x00" + b"MM\x00*" + struct.pack(">I", 8) + ifd + table
    if len(payload) + 2 > 0xFFFF:
        raise ValueError(f"{entries} entries do not fit in one APP2 segment")
    app2 = b"\xff\xe2" + struct.pack(">H", len(payload) + 2) + payload
    return first[:2] + app2 + first[2:] + picture * entries


def small_jpeg() -> bytes:
    """About 5 KB: a 96 x 96 JPEG of noise (the pictures the MP index bomb points at)."""
    import random

    from PIL import Image

    image = Image.frombytes("L", (96, 96), random.Random(7).randbytes(96 * 96))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=75)
    return out.getvalue()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def write_zero_png(path: Path, side: int) -> None:
    """A ``side`` x ``side`` RGBA PNG at 16 bits per sample, every pixel zero, row by row."""
    packer = zlib.compressobj(9)
    row = bytes(1 + side * 8)  # filter type 0, then 8 bytes per pixel
    with path.open("wb") as out:
        out.write(b"\x89PNG\r\n\x1a\n")
        out.write(_png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 16, 6, 0, 0, 0)))
        for _ in range(side):
            packed = packer.compress(row)
            if packed:
                out.write(_png_chunk(b"IDAT", packed))
        out.write(_png_chunk(b"IDAT", packer.flush()))
        out.write(_png_chunk(b"IEND", b""))


class _Zeros(io.RawIOBase):
    """``size`` zero bytes, read in pieces (tarfile copies a member in 16 KiB reads)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: object) -> int:
        count = min(len(buffer), self.left)  # type: ignore[arg-type]
        buffer[:count] = bytes(count)  # type: ignore[index]
        self.left -= count
        return count


def _member(tar: tarfile.TarFile, name: str, size: int, data: io.RawIOBase | None = None) -> None:
    info = tarfile.TarInfo(name)
    info.size = size
    tar.addfile(info, data if data is not None else _Zeros(size))


def write_unpaired(
    path: Path, members: int = 300, size: int = 1 << 20, *, compressed: bool = True
) -> None:
    """``members`` image members of ``size`` zero bytes, none with its metadata (.tar.gz or .tar).

    Packed, 300 of 1 MiB take about 320 KB; unpacked, 315 MB.
    """
    options = {"mode": "w:gz", "compresslevel": 9} if compressed else {"mode": "w"}
    with tarfile.open(path, **options) as tar:  # type: ignore[call-overload]
        for index in range(members):
            _member(tar, f"lonely_{index:03d}.png", size)


def write_huge_member(path: Path, size: int = 600 << 20) -> None:
    """One image member of ``size`` zero bytes, packed with xz: its size is in its header."""
    with tarfile.open(path, "w:xz", preset=1) as tar:
        _member(tar, "huge.png", size)


def write_pax_header(path: Path, size: int = 200 << 20) -> None:
    """A .tar.gz whose first member declares an extended (pax) header of ``size`` bytes.

    By hand, so the header is streamed: one well-formed record
    ``"<size> comment=xxx...\\n"`` whose length is ``size``.
    """
    head = f"{size} comment=".encode()  # the record's length counts its own digits
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type = tarfile.XHDTYPE
    pax.size = size
    member = tarfile.TarInfo("x.png")
    with gzip.open(path, "wb", compresslevel=9) as out:
        out.write(pax.tobuf(format=tarfile.USTAR_FORMAT))
        out.write(head)
        left = size - len(head) - 1
        piece = b"x" * (1 << 20)
        while left:
            out.write(piece[: min(left, len(piece))])
            left -= min(left, len(piece))
        out.write(b"\n")
        out.write(bytes(-size % tarfile.BLOCKSIZE))
        out.write(member.tobuf(format=tarfile.USTAR_FORMAT))
        out.write(bytes(2 * tarfile.BLOCKSIZE))


def write_metadata_objects(path: Path, members: int = 40) -> None:
    """``members`` metadata members of just under 1 MiB each: a JSON list of empty objects.

    Each member is under the metadata limit, and none has its image; parsed,
    each is about 30 MB of Python objects (.tar.gz: 43 KB for 40).
    """
    body = b"[" + b"{}," * ((1 << 20) // 3 - 1)
    body = body[:-1] + b"]"
    with tarfile.open(path, "w:gz", compresslevel=9) as tar:
        for index in range(members):
            _member(tar, f"objects_{index:03d}.png.json", len(body), io.BytesIO(body))  # type: ignore[arg-type]


BAD_SIZES: list[object] = [[1], "big", 10**30]


def write_bad_metadata(path: Path, good: int = 3) -> None:
    """Pairs whose ``originalSize`` is ``[1]``, ``"big"``, ``10**30``, then ``good`` valid pairs."""
    from PIL import Image

    def pair(tar: tarfile.TarFile, day: int, **fields: object) -> None:
        picture = io.BytesIO()
        Image.new("RGB", (16, 16), (day, 0, 0)).save(picture, "PNG")
        meta = {"deviceId": "hostile", "timestamp": f"2024-11-{day:02d}T00:00:00Z", **fields}
        name = f"hostile_{day:02d}.png"
        for member, body in ((name, picture.getvalue()), (f"{name}.json", json.dumps(meta))):
            data = body.encode() if isinstance(body, str) else body
            _member(tar, member, len(data), io.BytesIO(data))  # type: ignore[arg-type]

    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for day, bad in enumerate(BAD_SIZES, start=1):
            pair(tar, day, originalSize=bad)
        for day in range(len(BAD_SIZES) + 1, len(BAD_SIZES) + 1 + good):
            pair(tar, day)


def built(directory: Path, name: str, write: Callable[[Path], None]) -> Path:
    """``directory/name``, written by ``write`` unless it is there already."""
    path = directory / name
    if not path.exists():
        partial = path.with_name(path.name + ".partial")
        write(partial)
        partial.rename(path)
    return path


def built_bytes(directory: Path, name: str, make: Callable[[], bytes]) -> Path:
    """:func:`built` for a file made in memory."""
    return built(directory, name, lambda path: path.write_bytes(make()))
