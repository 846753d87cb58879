"""The quick effort (``compress(..., effort=QUICK)``): cheaper, still lossless and never larger."""

from __future__ import annotations

import random
import struct

import pytest
from PIL import Image, PngImagePlugin

from conftest import ROOT
from images.compression import CHECK, FULL, QUICK, compress, pixels_equal
from images.compression.pngcheck import deflated_at_maximum
from images.tests.conftest_compression import (
    ICC,
    assert_lossless,
    decoded,
    encode,
    info,
    pattern,
    png16,
    png_chunk,
    png_ihdr,
    png_samples,
    unfiltered_png,
)


def camera_like(size: tuple[int, int] = (384, 256)) -> Image.Image:
    """Smooth light with sensor noise, in colour: the images the efforts were chosen for."""
    bands = []
    for band, sigma in enumerate((6, 8, 10)):
        light = Image.linear_gradient("L").rotate(40 * band).resize(size)
        bands.append(Image.blend(light, Image.effect_noise(size, sigma), 0.25))
    return Image.merge("RGB", bands)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "1", "P", "I;16"])
def test_quick_effort_keeps_png_pixels_and_mode(mode: str) -> None:
    data = encode(pattern(mode), "PNG", compress_level=1)
    stored = assert_lossless(data, "oxipng", effort=QUICK)
    assert len(stored) < len(data)
    assert png_ihdr(stored)[2:] == png_ihdr(data)[2:]  # bit depth and colour type


def test_quick_effort_keeps_every_bit_of_16bit_colour_png() -> None:
    rng = random.Random(6)
    samples = b"".join(
        struct.pack(">H", ((x + y) * 1000 + rng.randrange(256)) % 65536)
        for y in range(16)
        for x in range(24)
        for _ in range(4)
    )
    data = png16(24, 16, 6, samples)
    result = compress(data, effort=QUICK)
    assert result.method == "oxipng"
    assert png_samples(result.data) == png_samples(data)


def test_quick_effort_keeps_png_icc_and_text_chunks() -> None:
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "compressed " * 20, zip=True)
    data = encode(pattern("RGB"), "PNG", compress_level=1, pnginfo=text, icc_profile=ICC)
    stored = assert_lossless(data, "oxipng", effort=QUICK)
    assert info(stored)["icc_profile"] == ICC
    assert info(stored)["Comment"] == "compressed " * 20


def test_quick_effort_still_optimizes_jpeg_and_converts_bmp_and_tiff() -> None:
    assert_lossless(
        encode(pattern("RGB", (128, 96)), "JPEG", icc_profile=ICC), "mozjpeg", effort=QUICK
    )
    assert_lossless(encode(pattern("RGB"), "BMP"), "converted-png", effort=QUICK)
    tiff = encode(pattern("RGB"), "TIFF", icc_profile=ICC)
    result = compress(tiff, effort=QUICK)
    assert (result.content_type, result.method) == ("image/png", "converted-png")
    assert decoded(result.data) == decoded(tiff)
    assert info(result.data)["icc_profile"] == ICC


def test_quick_effort_never_stores_more_than_it_received() -> None:
    # What the full effort stored is beyond the quick effort's reach.
    optimal = compress(encode(camera_like(), "PNG")).data
    result = compress(optimal, effort=QUICK)
    assert (result.data, result.method) == (optimal, "original")


@pytest.mark.parametrize(
    ("fmt", "method"), [("PNG", "original"), ("JPEG", "original"), ("BMP", "converted-png")]
)
def test_the_check_effort_only_converts_what_must_not_change_format_later(
    fmt: str, method: str
) -> None:
    data = encode(pattern("RGB"), fmt)
    checked = compress(data, effort=CHECK)
    assert checked.method == method
    assert pixels_equal(data, checked.data)
    if method == "original":
        assert checked.data == data


def maximum_deflate_png(image: Image.Image, *, filtered: bool) -> bytes:
    """``image`` (L) as a PNG that zlib deflated at level 9: rows filtered (Pillow's) or not."""
    if filtered:
        return encode(image, "PNG", compress_level=9)
    return unfiltered_png(*image.size, 8, 0, image.tobytes(), level=9)


def test_quick_keeps_a_png_zlib_deflated_at_maximum_and_full_still_shrinks_it() -> None:
    # brick.png: zlib level 9, rows filtered. Only a near-optimal deflate
    # beats it, which FULL has time for and QUICK keeps for better uses.
    brick = (ROOT / "testdata" / "skimage__brick.png").read_bytes()
    quick = compress(brick, effort=QUICK)
    assert (quick.data, quick.method) == (brick, "original")
    full = compress(brick, effort=FULL)
    assert full.method == "oxipng"
    assert len(full.data) < len(brick)
    assert pixels_equal(full.data, brick)


def test_quick_still_shrinks_the_same_pixels_deflated_less_or_left_unfiltered() -> None:
    image = camera_like().convert("L")
    for data in (
        encode(image, "PNG", compress_level=6),  # zlib's default level
        maximum_deflate_png(image, filtered=False),  # level 9, but no row filtered
    ):
        result = compress(data, effort=QUICK)
        assert result.method == "oxipng"
        assert len(result.data) < len(data)
        assert pixels_equal(result.data, data)
    # The same pixels filtered and at level 9 are kept as received.
    kept = maximum_deflate_png(image, filtered=True)
    assert compress(kept, effort=QUICK).data == kept


def test_quick_tries_a_maximum_deflate_whose_data_comes_after_too_many_chunks() -> None:
    # The judgement reads a bounded number of chunks: past it, the file is
    # simply tried (a hostile file may hold millions of empty chunks).
    kept = maximum_deflate_png(camera_like().convert("L"), filtered=True)
    assert deflated_at_maximum(kept)
    padded = kept[:33] + png_chunk(b"tEXt", b"") * 1500 + kept[33:]
    assert not deflated_at_maximum(padded)
    result = compress(padded, effort=QUICK)
    assert result.method == "oxipng"
    assert pixels_equal(result.data, padded)
