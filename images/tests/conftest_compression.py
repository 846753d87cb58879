"""Images for the compression tests: generated with Pillow, or by hand where Pillow cannot.

Round trips are checked with an independent decode (Pillow directly, or raw
PNG samples for 16-bit colour), not only with ``pixels_equal``.
"""

from __future__ import annotations

import io
import random
import struct
import zlib

from PIL import Image, ImageCms, ImageSequence

from images.compression import FULL, compress, pixels_equal

ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def pattern(mode: str, size: tuple[int, int] = (64, 48), seed: int = 0) -> Image.Image:
    """A compressible image with some noise, so optimizers have work to do."""
    rng = random.Random(seed)
    width, height = size
    image = Image.new(mode, size)
    bands = len(image.getbands())
    top = 65535 if mode == "I;16" else 255
    values = []
    for y in range(height):
        for x in range(width):
            base = (x * 5 + y * 3 + rng.randrange(4)) % (top + 1)
            values.append(
                base if bands == 1 else tuple((base + 60 * b) % 256 for b in range(bands))
            )
    if mode == "I;16":
        values = [(v * 251) % 65536 for v in values]
    image.putdata(values)
    if mode == "P":
        image.putpalette(bytes((i * 7 + c * 85) % 256 for i in range(256) for c in range(3)))
    return image


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def decoded(data: bytes) -> list[tuple[object, ...]]:
    """Every frame as Pillow decodes it: mode, size, palette, pixels, duration."""
    with Image.open(io.BytesIO(data)) as image:
        return [
            (
                frame.mode,
                frame.size,
                frame.getpalette(),
                frame.tobytes(),
                frame.info.get("duration"),
            )
            for frame in ImageSequence.Iterator(image)
        ]


def info(data: bytes) -> dict[str, object]:
    with Image.open(io.BytesIO(data)) as image:
        return dict(image.info)


def assert_lossless(data: bytes, method: str | None = None, *, effort: str = FULL) -> bytes:
    """Compress ``data``, check the stored image decodes identically, and return it.

    ``method``, when given, is the path that must have been taken: storing the
    original would make the other checks trivially true.
    """
    result = compress(data, effort=effort)
    stored = result.data
    if method is not None:
        assert result.method == method
    assert len(stored) <= len(data)
    assert decoded(stored) == decoded(data)
    assert pixels_equal(data, stored)
    return stored


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def unfiltered_png(
    width: int, height: int, depth: int, colour_type: int, samples: bytes, *, level: int
) -> bytes:
    """A PNG of ``samples``, every row unfiltered, deflated by zlib at ``level`` (Pillow can't)."""
    row = len(samples) // height
    raw = b"".join(b"\x00" + samples[y * row : (y + 1) * row] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(raw, level))
        + png_chunk(b"IEND", b"")
    )


def png16(width: int, height: int, colour_type: int, samples: bytes) -> bytes:
    """A 16-bit PNG from big-endian samples, unfiltered and stored uncompressed."""
    return unfiltered_png(width, height, 16, colour_type, samples, level=0)


def png_ihdr(data: bytes) -> tuple[int, int, int, int]:
    """Width, height, bit depth and colour type from a PNG's IHDR."""
    assert data[12:16] == b"IHDR"
    return struct.unpack_from(">IIBB", data, 16)


def png_samples(data: bytes) -> tuple[tuple[int, int, int, int], bytes]:
    """IHDR fields and the unfiltered sample bytes of a small non-interlaced PNG (PNG spec §9)."""
    pos, idat = 8, b""
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        if data[pos + 4 : pos + 8] == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    width, height, depth, colour_type = png_ihdr(data)
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour_type]
    bpp = max(1, channels * depth // 8)
    stride = (width * channels * depth + 7) // 8
    raw, out, previous = zlib.decompress(idat), bytearray(), bytearray(stride)
    for y in range(height):
        kind, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up, upper_left = previous[i], previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - upper_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - upper_left)
                nearest = left if pa <= pb and pa <= pc else up if pb <= pc else upper_left
                line[i] = (line[i] + nearest) & 255
        out += line
        previous = line
    return png_ihdr(data), bytes(out)


def animated_gif(frames: int, size: tuple[int, int] = (16, 16)) -> bytes:
    images = [pattern("P", size, seed=i) for i in range(frames)]
    durations = [40 + 10 * i for i in range(frames)]
    return encode(images[0], "GIF", save_all=True, append_images=images[1:], duration=durations)


def tiny_gif(frames: int) -> bytes:
    """A 1x1 GIF with ``frames`` minimal image descriptors: a cheap hostile animation."""
    header = b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"," + struct.pack("<4HB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return header + frame * frames + b";"


def set_png_chunk(data: bytes, kind: bytes, body: bytes) -> bytes:
    """Replace the body of the first ``kind`` chunk, fixing its CRC."""
    pos = data.index(kind) - 4
    (length,) = struct.unpack_from(">I", data, pos)
    return data[:pos] + png_chunk(kind, body) + data[pos + 12 + length :]


def jpeg_with_oversized_coefficients() -> bytes:
    """A progressive JPEG whose first AC Huffman code means run 8, size 14.

    libjpeg decodes 14-bit coefficients, but its encoder allows at most 10 bits
    and calls exit() when it meets one.
    """
    data = bytearray(encode(pattern("RGB"), "JPEG", progressive=True))
    pos = data.index(b"\xff\xc4")
    while data[pos + 4] >> 4 != 1:  # table class 1: AC
        pos = data.index(b"\xff\xc4", pos + 2)
    data[pos + 4 + 1 + 16] = 0x8E  # first symbol, after class/id and 16 code counts
    return bytes(data)
