"""Lossless compression: every fixture is generated with Pillow (or by hand where Pillow cannot).

Round trips are checked with an independent decode (Pillow directly, or raw
PNG samples for 16-bit colour), not only with ``pixels_equal``. Set
IMAGE_CORPUS to a directory of real images to run the corpus test too.
"""

from __future__ import annotations

import io
import os
import random
import struct
import subprocess
import sys
import time
import warnings
import zlib
from pathlib import Path

import oxipng
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms, ImageSequence, PngImagePlugin

from images.compression import (
    ImageInfo,
    Limits,
    compress,
    extension_for,
    pixels_equal,
    probe,
)
from images.errors import ImageTooLarge, InvalidImage

ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff"}


# --- fixtures -------------------------------------------------------------


def pattern(mode: str, size: tuple[int, int] = (64, 48), seed: int = 0) -> Image.Image:
    """A compressible image with some noise, so optimisers have work to do."""
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


def assert_lossless(data: bytes, method: str | None = None) -> bytes:
    """Compress ``data``, check the stored image decodes identically, and return it.

    ``method``, when given, is the path that must have been taken: storing the
    original would make the other checks trivially true.
    """
    result = compress(data)
    stored = result.data
    if method is not None:
        assert result.method == method
    assert len(stored) <= len(data)
    assert decoded(stored) == decoded(data)
    assert pixels_equal(data, stored)
    return stored


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png16(width: int, height: int, colour_type: int, samples: bytes) -> bytes:
    """A 16-bit PNG from big-endian samples, unfiltered and stored uncompressed (Pillow can't)."""
    row = len(samples) // height
    raw = b"".join(b"\x00" + samples[y * row : (y + 1) * row] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(raw, 0))
        + png_chunk(b"IEND", b"")
    )


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


# --- lossless round trips ---------------------------------------------------


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "1"])
def test_it_keeps_png_pixels_and_mode(mode: str) -> None:
    data = encode(pattern(mode), "PNG", compress_level=1)
    stored = assert_lossless(data, "oxipng")
    assert len(stored) < len(data)


def test_it_keeps_an_interlaced_png_interlaced() -> None:
    data = oxipng.optimize_from_memory(
        encode(pattern("RGB"), "PNG", compress_level=1),
        interlace=oxipng.Interlacing.Adam7,
        level=0,
        deflate=oxipng.Deflaters.libdeflater(1),
        force=True,
    )
    assert data[28] == 1  # IHDR interlace method: Adam7
    stored = assert_lossless(data, "oxipng")
    assert stored[28] == 1


def test_it_keeps_an_opaque_rgba_png_rgba() -> None:
    image = pattern("RGB").convert("RGBA")  # alpha 255 everywhere: oxipng would drop it
    data = encode(image, "PNG", compress_level=1)
    stored = assert_lossless(data, "oxipng")
    assert png_ihdr(stored)[3] == 6  # colour type RGBA
    assert Image.open(io.BytesIO(stored)).mode == "RGBA"


def test_it_keeps_a_palette_png_with_transparency() -> None:
    image = pattern("P")
    image.putpalette(bytes(range(256)) * 3)
    data = encode(image, "PNG", compress_level=1, transparency=bytes(range(0, 256, 2)))
    stored = assert_lossless(data, "oxipng")
    assert info(stored)["transparency"] == info(data)["transparency"]


def test_it_keeps_16bit_grey_png_pixels() -> None:
    image = pattern("I;16")
    data = encode(image, "PNG", compress_level=1)
    stored = assert_lossless(data, "oxipng")
    assert png_ihdr(stored)[2] == 16
    assert Image.open(io.BytesIO(stored)).getextrema()[1] > 255


@pytest.mark.parametrize(("colour_type", "channels"), [(2, 3), (4, 2), (6, 4)])
def test_it_keeps_every_bit_of_16bit_colour_png(colour_type: int, channels: int) -> None:
    rng = random.Random(colour_type)
    width, height = 24, 16
    samples = b"".join(
        struct.pack(">H", ((x + y) * 1000 + rng.randrange(256)) % 65536)
        for y in range(height)
        for x in range(width)
        for _ in range(channels)
    )
    data = png16(width, height, colour_type, samples)
    result = compress(data)
    assert result.method == "oxipng"
    assert len(result.data) < len(data)
    # Pillow reduces these to 8 bits on load, so compare the raw samples.
    assert png_samples(result.data) == png_samples(data)
    assert pixels_equal(data, result.data)


def test_pixels_equal_sees_the_low_byte_of_16bit_colour() -> None:
    samples = bytes(range(256)) * 6  # 16 x 16 pixels, 3 x 2 bytes each
    changed = bytearray(samples)
    changed[1] ^= 1  # low byte of the first red sample
    assert not pixels_equal(png16(16, 16, 2, samples), png16(16, 16, 2, bytes(changed)))
    assert pixels_equal(png16(16, 16, 2, samples), png16(16, 16, 2, samples))


def test_it_keeps_every_frame_of_an_animated_gif() -> None:
    data = animated_gif(4)
    result = compress(data)
    assert result.data == data  # GIF is stored as received
    assert (result.content_type, result.frames) == ("image/gif", 4)
    assert [frame[4] for frame in decoded(result.data)] == [40, 50, 60, 70]


def test_it_keeps_every_frame_and_duration_of_an_apng() -> None:
    images = [pattern("RGBA", seed=i) for i in range(3)]
    data = encode(
        images[0],
        "PNG",
        save_all=True,
        append_images=images[1:],
        duration=[100, 200, 300],
        compress_level=1,
    )
    stored = assert_lossless(data, "oxipng")
    assert [frame[4] for frame in decoded(stored)] == [100, 200, 300]


def test_it_optimises_a_progressive_jpeg_keeping_exif_and_icc() -> None:
    exif = Image.Exif()
    exif[0x010F] = "Maker"  # Make
    exif[0x0132] = "2024:08:18 02:04:07"  # DateTime
    data = encode(
        pattern("RGB", (128, 96)),
        "JPEG",
        quality=90,
        progressive=True,
        exif=exif.tobytes(),
        icc_profile=ICC,
    )
    stored = assert_lossless(data, "mozjpeg")
    assert info(stored)["icc_profile"] == ICC
    assert info(stored)["exif"] == info(data)["exif"]


def test_it_keeps_cmyk_jpeg_pixels() -> None:
    data = encode(pattern("CMYK", (64, 64)), "JPEG", quality=90)
    stored = assert_lossless(data, "mozjpeg")
    assert Image.open(io.BytesIO(stored)).mode == "CMYK"


def test_it_stores_a_multi_picture_jpeg_byte_identical() -> None:
    images = [pattern("RGB", seed=i) for i in range(2)]
    data = encode(images[0], "MPO", save_all=True, append_images=images[1:])
    info_ = probe(data)
    assert (info_.format, info_.content_type, info_.frames) == ("JPEG", "image/jpeg", 2)
    result = compress(data)
    assert result.data == data
    assert result.method == "original"


def test_it_keeps_a_jpeg_with_bytes_after_its_end_byte_identical() -> None:
    data = encode(pattern("RGB"), "JPEG") + b"appended video or thumbnail"
    assert compress(data).data == data


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


def test_a_jpeg_that_kills_mozjpeg_in_process_is_stored_as_received() -> None:
    data = jpeg_with_oversized_coefficients()
    Image.open(io.BytesIO(data)).load()  # Pillow decodes it
    code = "import sys, mozjpeg_lossless_optimization as m; m.optimize(sys.stdin.buffer.read())"
    child = subprocess.run([sys.executable, "-c", code], input=data, capture_output=True)
    assert child.returncode == 1
    assert b"Traceback" not in child.stderr  # exit() from C, not a Python exception
    result = compress(data)
    assert (result.data, result.method) == (data, "original")


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "1"])
def test_it_converts_bmp_to_png(mode: str) -> None:
    data = encode(pattern(mode), "BMP")
    result = compress(data)
    assert (result.content_type, result.method) == ("image/png", "converted-png")
    assert decoded(result.data) == decoded(data)


def test_it_converts_uncompressed_tiff_to_png_keeping_icc() -> None:
    data = encode(pattern("RGB"), "TIFF", icc_profile=ICC)
    result = compress(data)
    assert (result.content_type, result.method) == ("image/png", "converted-png")
    assert decoded(result.data) == decoded(data)
    assert info(result.data)["icc_profile"] == ICC


def test_it_converts_16bit_grey_tiff_to_16bit_png() -> None:
    data = encode(pattern("I;16"), "TIFF")
    result = compress(data)
    assert result.content_type == "image/png"
    assert png_ihdr(result.data)[2] == 16
    assert decoded(result.data) == decoded(data)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(encode(pattern("RGB"), "TIFF", compression="tiff_lzw"), id="lzw"),
        pytest.param(encode(pattern("CMYK"), "TIFF"), id="cmyk"),
        pytest.param(
            encode(pattern("L"), "TIFF", save_all=True, append_images=[pattern("L", seed=1)]),
            id="two-pages",
        ),
    ],
)
def test_it_keeps_tiff_it_cannot_convert(data: bytes) -> None:
    result = compress(data)
    assert (result.data, result.content_type) == (data, "image/tiff")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(encode(pattern("RGB"), "WEBP", lossless=True), id="lossless"),
        pytest.param(
            encode(
                pattern("RGB"),
                "WEBP",
                save_all=True,
                append_images=[pattern("RGB", seed=1)],
                duration=[100, 150],
            ),
            id="animated",
        ),
    ],
)
def test_it_stores_webp_as_received(data: bytes) -> None:
    result = compress(data)
    assert (result.data, result.content_type, result.method) == (data, "image/webp", "original")


def test_it_keeps_png_icc_exif_and_text_chunks() -> None:
    text = PngImagePlugin.PngInfo()
    text.add_text("Title", "plain")
    text.add_text("Comment", "compressed " * 20, zip=True)
    text.add_itxt("Author", "Grace Hopper ✓", lang="en", tkey="Autor")
    exif = Image.Exif()
    exif[0x010F] = "Maker"
    data = encode(
        pattern("RGB"),
        "PNG",
        compress_level=1,
        pnginfo=text,
        icc_profile=ICC,
        exif=exif.tobytes(),
    )
    stored = assert_lossless(data, "oxipng")
    before, after = Image.open(io.BytesIO(data)), Image.open(io.BytesIO(stored))
    assert after.text == before.text
    assert after.info["icc_profile"] == ICC
    assert after.getexif()[0x010F] == "Maker"


def test_it_never_stores_more_than_it_received() -> None:
    optimal = compress(encode(pattern("RGB"), "PNG")).data
    result = compress(optimal)  # nothing left to gain
    assert result.data == optimal
    assert result.method == "original"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mode=st.sampled_from(["RGB", "RGBA", "L", "LA", "P", "1", "I;16"]),
    width=st.integers(1, 24),
    height=st.integers(1, 24),
    seed=st.integers(0, 2**16),
    level=st.sampled_from([0, 9]),
)
def test_any_small_png_round_trips(
    mode: str, width: int, height: int, seed: int, level: int
) -> None:
    size = width * height * {"1": 1, "I;16": 2}.get(mode, len(Image.new(mode, (1, 1)).getbands()))
    pixels = random.Random(seed).randbytes(size)
    image = Image.frombytes(mode, (width, height), pixels, "raw", "L" if mode == "1" else mode)
    assert_lossless(encode(image, "PNG", compress_level=level))


# --- probe and helpers ------------------------------------------------------


def test_probe_reads_format_size_and_frames_from_headers() -> None:
    assert probe(animated_gif(3, (20, 10))) == ImageInfo("GIF", "image/gif", 20, 10, 3)
    two_pages = encode(pattern("L"), "TIFF", save_all=True, append_images=[pattern("L")])
    assert probe(two_pages) == ImageInfo("TIFF", "image/tiff", 64, 48, 2)


@pytest.mark.parametrize(
    ("content_type", "extension"),
    [
        ("image/png", "png"),
        ("image/jpeg", "jpg"),
        ("image/gif", "gif"),
        ("image/webp", "webp"),
        ("image/bmp", "bmp"),
        ("image/tiff", "tiff"),
        ("application/octet-stream", "bin"),
    ],
)
def test_extension_for_names_the_stored_type(content_type: str, extension: str) -> None:
    assert extension_for(content_type) == extension


# --- limits -------------------------------------------------------------------


def test_it_refuses_more_bytes_than_the_limit() -> None:
    data = encode(pattern("RGB"), "PNG")
    with pytest.raises(ImageTooLarge) as caught:
        compress(data, Limits(max_bytes=len(data) - 1))
    assert caught.value.limit == len(data) - 1
    assert compress(data, Limits(max_bytes=len(data))).original_size == len(data)


def bomb_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height over a few bytes of data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
        + png_chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("side", [10_001, 20_000, 65_535])
def test_it_refuses_a_decompression_bomb_from_the_header(side: int) -> None:
    started = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither Pillow's error nor its warning may escape
        with pytest.raises(ImageTooLarge):
            compress(bomb_png(side, side))
    assert time.monotonic() - started < 0.5


def test_the_pixel_limit_is_the_configured_one() -> None:
    data = encode(pattern("RGB", (10, 10)), "PNG")
    with pytest.raises(ImageTooLarge):
        compress(data, Limits(max_pixels=99))
    assert compress(data, Limits(max_pixels=100)).width == 10


def test_pillow_global_bomb_limit_does_not_undercut_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    data = encode(pattern("RGB", (40, 40)), "PNG")  # 1,600 pixels: Pillow alone would refuse
    assert compress(data).width == 40


def test_it_refuses_a_gif_frame_far_outside_its_screen() -> None:
    data = bytearray(tiny_gif(1))
    struct.pack_into("<HH", data, 13 + 6 + 5, 30_000, 30_000)  # the descriptor's width, height
    with pytest.raises(ImageTooLarge):
        compress(bytes(data))


def test_it_refuses_a_webp_canvas_beyond_the_limit_before_decoding() -> None:
    extended = bytearray(encode(pattern("RGB"), "WEBP", lossless=True, icc_profile=ICC))
    assert extended[12:16] == b"VP8X"
    extended[24:30] = (16383).to_bytes(3, "little") * 2  # canvas 16384 x 16384
    simple = bytearray(encode(pattern("RGB"), "WEBP", lossless=True))
    assert simple[12:16] == b"VP8L"
    bits = int.from_bytes(simple[21:25], "little")
    simple[21:25] = (bits & ~(2**28 - 1) | 2**28 - 1).to_bytes(4, "little")  # 16384 x 16384
    for data in (extended, simple):
        with pytest.raises(ImageTooLarge):
            probe(bytes(data))


def test_it_refuses_more_frames_than_the_limit() -> None:
    data = animated_gif(4)
    with pytest.raises(ImageTooLarge):
        compress(data, Limits(max_frames=3))
    assert compress(data, Limits(max_frames=4)).frames == 4


def test_counting_frames_of_a_hostile_gif_stops_at_the_limit() -> None:
    data = tiny_gif(300_000)
    started = time.monotonic()
    with pytest.raises(ImageTooLarge):
        probe(data)
    assert time.monotonic() - started < 0.5


def test_it_refuses_an_apng_claiming_too_many_frames() -> None:
    images = [pattern("RGB", seed=i) for i in range(2)]
    data = encode(images[0], "PNG", save_all=True, append_images=images[1:])
    data = set_png_chunk(data, b"acTL", struct.pack(">II", 2**31 - 1, 0))
    with pytest.raises(ImageTooLarge):
        compress(data)


# --- bad input ----------------------------------------------------------------


def truncated(data: bytes, keep: float) -> bytes:
    return data[: int(len(data) * keep)]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(random.Random(1).randbytes(4096), id="random-bytes"),
        pytest.param(b"<!DOCTYPE html><html><body>not an image</body></html>", id="html"),
        pytest.param(encode(pattern("RGB"), "PCX"), id="pcx"),
        pytest.param(encode(pattern("RGB"), "ICO"), id="ico"),
        pytest.param(b"\x89PNG\r\n\x1a\n", id="png-signature-only"),
        pytest.param(truncated(encode(pattern("RGB"), "PNG"), 0.6), id="truncated-png"),
        pytest.param(truncated(encode(pattern("RGB"), "JPEG"), 0.6), id="truncated-jpeg"),
        pytest.param(truncated(encode(pattern("RGB"), "JPEG"), 0.05), id="truncated-jpeg-header"),
        pytest.param(truncated(animated_gif(3), 0.9), id="truncated-gif-last-frame"),
        pytest.param(truncated(encode(pattern("RGB"), "BMP"), 0.6), id="truncated-bmp"),
        pytest.param(truncated(encode(pattern("RGB"), "TIFF"), 0.6), id="truncated-tiff"),
        pytest.param(truncated(encode(pattern("RGB"), "WEBP"), 0.6), id="truncated-webp"),
    ],
)
def test_it_refuses_what_is_not_a_whole_supported_image(data: bytes) -> None:
    with pytest.raises(InvalidImage):
        compress(data)
    assert not pixels_equal(data, data)


def test_it_names_the_supported_formats() -> None:
    with pytest.raises(
        InvalidImage, match=r"not a supported image \(PNG, JPEG, GIF, WebP, BMP, TIFF\)"
    ) as caught:
        compress(b"<html></html>")
    assert caught.value.field == "imageData"


def test_it_refuses_a_png_whose_data_fails_its_checksum() -> None:
    data = bytearray(encode(pattern("RGB"), "PNG"))
    data[data.index(b"IDAT") + 10] ^= 0xFF
    with pytest.raises(InvalidImage):
        compress(bytes(data))


# --- corpus ---------------------------------------------------------------------


def corpus() -> list[object]:
    root = os.environ.get("IMAGE_CORPUS")
    if not root:
        reason = "IMAGE_CORPUS is not set (e.g. IMAGE_CORPUS=/work/shared/corpus)"
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason), id="no-corpus")]
    files = sorted(p for p in Path(root).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return [pytest.param(path, id=path.name) for path in files]


@pytest.mark.parametrize("path", corpus())
def test_corpus_image_is_stored_losslessly(path: Path) -> None:
    data = path.read_bytes()
    result = compress(data)
    assert len(result.data) <= len(data)
    assert pixels_equal(data, result.data)
    before, after = info(data), info(result.data)
    for key in ("icc_profile", "exif"):
        assert after.get(key) == before.get(key)
    if data.startswith(b"\x89PNG"):
        assert png_ihdr(result.data)[2:] == png_ihdr(data)[2:]  # 16-bit stays 16-bit
