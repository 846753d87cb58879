"""Lossless compression of JPEG, GIF, BMP, TIFF and WebP: what each becomes, and what is kept."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
from PIL import Image

from images.compression import compress, probe
from images.tests.conftest_compression import (
    ICC,
    animated_gif,
    assert_lossless,
    decoded,
    encode,
    info,
    jpeg_with_oversized_coefficients,
    pattern,
    png_ihdr,
)


def test_it_keeps_every_frame_of_an_animated_gif() -> None:
    data = animated_gif(4)
    result = compress(data)
    assert result.data == data  # GIF is stored as received
    assert (result.content_type, result.frames) == ("image/gif", 4)
    assert [frame[4] for frame in decoded(result.data)] == [40, 50, 60, 70]


def test_it_optimizes_a_progressive_jpeg_keeping_exif_and_icc() -> None:
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
