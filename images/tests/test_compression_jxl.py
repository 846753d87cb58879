"""JPEG compacted as JPEG XL (API.md §12): rebuilt bit for bit, or not compacted at all.

Every round trip runs the real libjxl (through imagecodecs) and is checked
by sha256. Photos come from testdata/; everything else is made with Pillow,
or from a Pillow file changed by hand where Pillow cannot write the case.
"""

from __future__ import annotations

import hashlib
import io
import random
import struct

import imagecodecs
import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from images.compression import mpo
from images.compression.jxl import FORM_JXL, FORM_PARTS, jpeg_compact, jpeg_restore
from images.tests.conftest_compression import ICC, encode, pattern

TESTDATA_JPEGS = sorted((ROOT / "testdata").glob("*.jpg"))
DAMAGED = "jxl-parts|cannot rebuild the JPEG"  # what jpeg_restore's ValueErrors say


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def photo(mode: str = "RGB", size: tuple[int, int] = (256, 192), **options: object) -> bytes:
    return encode(pattern(mode, size, seed=7), "JPEG", quality=90, **options)


def assert_compacted(data: bytes, form: str) -> bytes:
    """Compact ``data``, check the form, that it is smaller and rebuilds to the same sha256."""
    compacted = jpeg_compact(data)
    assert compacted is not None
    assert compacted.form == form
    assert len(compacted.data) < len(data)
    assert sha256(jpeg_restore(compacted.data, compacted.form)) == sha256(data)
    return compacted.data


def with_segment(data: bytes, marker: int, payload: bytes) -> bytes:
    """``data`` with a marker segment inserted right after SOI (T.81 §B.1.1.4)."""
    return data[:2] + struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload + data[2:]


@pytest.mark.parametrize("path", TESTDATA_JPEGS, ids=lambda path: path.name)
def test_every_testdata_jpeg_is_rebuilt_bit_for_bit(path) -> None:
    data = path.read_bytes()
    jxl = assert_compacted(data, FORM_JXL)
    assert imagecodecs.jpegxl_check(jxl)  # a plain JPEG XL file


def test_a_baseline_jpeg_becomes_a_plain_jpeg_xl_file() -> None:
    data = photo()
    jxl = assert_compacted(data, FORM_JXL)
    # Any JPEG XL decoder shows it: the same size as the JPEG.
    assert imagecodecs.jpegxl_decode(jxl).shape == (192, 256, 3)


def test_a_progressive_jpeg_is_rebuilt_bit_for_bit() -> None:
    data = photo(progressive=True)
    assert b"\xff\xc2" in data  # SOF2: progressive DCT
    assert_compacted(data, FORM_JXL)


@pytest.mark.parametrize(
    "option", [{"restart_marker_blocks": 3}, {"restart_marker_rows": 1}], ids=str
)
def test_restart_markers_are_rebuilt_bit_for_bit(option) -> None:
    data = photo(**option)
    assert b"\xff\xdd" in data  # DRI
    assert b"\xff\xd0" in data  # RST0 in the entropy-coded data
    assert_compacted(data, FORM_JXL)


@pytest.mark.parametrize(
    ("mode", "subsampling"),
    [("L", -1), ("RGB", 0), ("RGB", 1), ("RGB", 2)],
    ids=["grayscale", "4:4:4", "4:2:2", "4:2:0"],
)
def test_every_subsampling_and_grayscale_are_rebuilt_bit_for_bit(mode, subsampling) -> None:
    data = photo(mode, subsampling=subsampling)
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode == mode
    assert_compacted(data, FORM_JXL)


def test_an_icc_profile_is_kept() -> None:
    data = photo(icc_profile=ICC)
    assert b"ICC_PROFILE\x00" in data
    assert_compacted(data, FORM_JXL)


def test_a_60_kb_exif_segment_is_kept() -> None:
    exif = Image.Exif()
    # ImageDescription: 60 KB of hex digits that Brotli can shrink only so far
    exif[0x010E] = random.Random(1).randbytes(30_000).hex()
    data = photo(size=(512, 384), exif=exif.tobytes())
    assert len(data) > 60_000
    assert_compacted(data, FORM_JXL)


def test_a_large_unknown_app_segment_and_a_comment_are_kept() -> None:
    vendor = b"vendor\x00" + random.Random(2).randbytes(60_000)  # incompressible
    data = with_segment(photo(size=(512, 384)), 0xEF, vendor)
    data = with_segment(data, 0xFE, b"a comment " * 100)  # COM
    assert_compacted(data, FORM_JXL)


def test_bytes_after_the_eoi_are_kept_around_the_picture() -> None:
    picture = photo()
    data = picture + b"\x00trailer appended by the camera" * 10
    assert_compacted(data, FORM_PARTS)


def test_cmyk_is_not_compacted() -> None:
    data = photo("CMYK")
    with pytest.raises(RuntimeError):  # libjxl refuses 4 components
        imagecodecs.jpegxl_encode_jpeg(data)
    assert jpeg_compact(data) is None


def test_an_arithmetic_coded_jpeg_is_not_compacted() -> None:
    # Pillow writes no arithmetic coding: the SOF0 of a baseline file becomes
    # SOF9 (extended sequential, arithmetic, T.81 Table B.1), which JPEG XL's
    # reconstruction cannot represent.
    baseline = photo()
    sof = baseline.index(b"\xff\xc0")
    data = baseline[:sof] + b"\xff\xc9" + baseline[sof + 2 :]
    with pytest.raises(RuntimeError):
        imagecodecs.jpegxl_encode_jpeg(data)
    assert jpeg_compact(data) is None


def test_a_12_bit_jpeg_is_not_compacted() -> None:
    samples = (np.arange(96 * 128 * 3).reshape(96, 128, 3) * 37 % 4096).astype(np.uint16)
    data = imagecodecs.jpeg8_encode(samples, bitspersample=12)  # Pillow writes only 8 bits
    assert b"\xff\xc1\x00\x11\x0c" in data  # SOF1, 17 bytes, P = 12 (T.81 §B.2.2)
    with pytest.raises(RuntimeError):
        imagecodecs.jpegxl_encode_jpeg(data)
    assert jpeg_compact(data) is None


@pytest.mark.parametrize("keep", [0.5, 0.95, -2], ids=["half", "most", "no EOI"])
def test_a_truncated_jpeg_is_not_compacted(keep) -> None:
    data = photo()
    cut = int(len(data) * keep) if keep > 0 else len(data) + keep
    assert jpeg_compact(data[:cut]) is None


def test_a_tiny_jpeg_that_jpeg_xl_would_not_shrink_is_not_compacted() -> None:
    data = encode(Image.new("RGB", (8, 8), (10, 20, 30)), "JPEG")
    assert len(imagecodecs.jpegxl_encode_jpeg(data)) >= len(data)
    assert jpeg_compact(data) is None


@pytest.mark.parametrize(
    "data",
    [b"", b"\xff\xd8", b"\xff\xd8\xff\xd9", encode(pattern("RGB"), "PNG"), b"\xff\xd8" * 1000],
    ids=["empty", "SOI", "SOI EOI", "PNG", "SOIs"],
)
def test_what_is_not_a_jpeg_is_not_compacted(data) -> None:
    assert jpeg_compact(data) is None


def test_a_picture_over_the_pixel_cap_is_not_compacted() -> None:
    data = photo()  # 256 x 192 = 49,152 pixels, from the frame header
    assert mpo.frame_pixels(data) == 256 * 192
    assert jpeg_compact(data, max_pixels=256 * 192 - 1) is None
    assert jpeg_compact(data, max_pixels=256 * 192) is not None


def test_a_jpeg_whose_frame_header_gives_no_height_is_not_compacted() -> None:
    # Height 0: the number of lines would come in a DNL segment (T.81 §B.2.5).
    baseline = photo()
    sof = baseline.index(b"\xff\xc0")
    data = baseline[: sof + 5] + b"\x00\x00" + baseline[sof + 7 :]
    assert mpo.frame_pixels(data) is None
    assert jpeg_compact(data) is None


# The container: damage is a ValueError, never different bytes or another error.


@pytest.fixture(scope="module")
def parts() -> tuple[bytes, bytes]:
    """A JPEG with a trailer and its jxl-parts form: one JPEG XL part, one raw part."""
    data = photo(size=(128, 96)) + b"trailer" * 20
    compacted = jpeg_compact(data)
    assert compacted is not None
    assert compacted.form == FORM_PARTS
    return data, compacted.data


def test_every_truncation_of_a_parts_container_is_a_value_error(parts) -> None:
    data, container = parts
    for cut in range(len(container)):
        with pytest.raises(ValueError, match=DAMAGED):
            jpeg_restore(container[:cut], FORM_PARTS)
    assert jpeg_restore(container, FORM_PARTS) == data


def test_a_changed_byte_anywhere_in_a_parts_container_is_a_value_error_or_harmless(
    parts,
) -> None:
    data, container = parts
    errors = 0
    for pos in range(len(container)):
        damaged = bytearray(container)
        damaged[pos] ^= 0x5A
        try:
            rebuilt = jpeg_restore(bytes(damaged), FORM_PARTS)
        except ValueError:
            errors += 1
        else:
            # A few bits of a JPEG XL header do not take part in rebuilding
            # the JPEG: changing them changes nothing. Anything else would
            # fail the size and CRC-32 check.
            assert rebuilt == data
    assert errors > 0.95 * len(container)


@pytest.mark.parametrize(
    "container",
    [
        b"JXLPARTX\x01" + bytes(8),  # wrong magic
        b"JXLPARTS\x02" + bytes(8) + b"\x00\x00\x00\x00\x00",  # unknown version
        b"JXLPARTS\x01" + bytes(8),  # no parts
        b"JXLPARTS\x01" + bytes(8) + b"\x07\x00\x00\x00\x00",  # unknown part kind
        b"JXLPARTS\x01" + bytes(8) + b"\x00\xff\xff\xff\xff",  # a part past the end
        b"JXLPARTS\x01" + bytes(8) + b"\x01\x00\x00\x00\x00",  # an empty JPEG XL part
        b"JXLPARTS\x01" + bytes(8) + b"\x01\x00\x00\x00\x04abcd",  # not JPEG XL
    ],
)
def test_a_malformed_parts_container_is_a_value_error(container) -> None:
    with pytest.raises(ValueError, match=DAMAGED):
        jpeg_restore(container, FORM_PARTS)


def test_a_jpeg_xl_without_reconstruction_data_is_a_value_error() -> None:
    jxl = imagecodecs.jpegxl_encode(np.asarray(pattern("RGB", (32, 32))))
    with pytest.raises(ValueError, match="cannot rebuild the JPEG"):
        jpeg_restore(jxl, FORM_JXL)


@pytest.mark.parametrize("data", [b"", b"\xff\x0a", b"not jpeg xl at all"])
def test_damaged_plain_jpeg_xl_is_a_value_error(data) -> None:
    with pytest.raises(ValueError, match="cannot rebuild the JPEG"):
        jpeg_restore(data, FORM_JXL)


def test_an_unknown_form_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown compacted form"):
        jpeg_restore(b"", "brotli")
