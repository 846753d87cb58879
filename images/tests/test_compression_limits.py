"""What compression refuses: images past the limits (API.md §9 "Limits"), broken input."""

from __future__ import annotations

import random
import struct
import time
import warnings
import zlib

import pytest
from PIL import Image

from images.compression import ImageInfo, Limits, compress, extension_for, pixels_equal, probe
from images.errors import ImageTooLarge, InvalidImage
from images.tests.conftest_compression import (
    ICC,
    animated_gif,
    encode,
    pattern,
    png_chunk,
    set_png_chunk,
    tiny_gif,
)

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
