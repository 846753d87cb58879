"""Lossless compression of PNG (and APNG): pixels, modes, bit depths, chunks (API.md §9)."""

from __future__ import annotations

import io
import random
import struct

import oxipng
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

from images.compression import FULL, QUICK, compress, pixels_equal
from images.tests.conftest_compression import (
    ICC,
    assert_lossless,
    decoded,
    encode,
    info,
    pattern,
    png16,
    png_ihdr,
    png_samples,
)


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
    effort=st.sampled_from([FULL, QUICK]),
)
def test_any_small_png_round_trips(
    mode: str, width: int, height: int, seed: int, level: int, effort: str
) -> None:
    size = width * height * {"1": 1, "I;16": 2}.get(mode, len(Image.new(mode, (1, 1)).getbands()))
    pixels = random.Random(seed).randbytes(size)
    image = Image.frombytes(mode, (width, height), pixels, "raw", "L" if mode == "1" else mode)
    assert_lossless(encode(image, "PNG", compress_level=level), effort=effort)
