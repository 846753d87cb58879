"""Multi-picture JPEG (MPO, CIPA DC-007) compacted picture by picture, rebuilt bit for bit.

MPO files are written by Pillow, or by hand (:func:`mpo_by_hand`) where a
case needs what Pillow does not write: big-endian MP Index, bytes between
pictures. Pillow reading every picture back is the check that a hand-made
file is a real MPO.
"""

from __future__ import annotations

import hashlib
import io
import struct

import pytest
from PIL import Image

from images.compression import mpo
from images.compression.jxl import FORM_PARTS, jpeg_compact, jpeg_restore
from images.tests.conftest_compression import encode, pattern

MP_HEADER = 10  # SOI, APP2 marker and length, "MPF\0": where a hand-made MP Header starts
RAW, JXL = "raw", "jxl"


def photo(seed: int, mode: str = "RGB", size: tuple[int, int] = (256, 192)) -> Image.Image:
    return pattern(mode, size, seed=seed)


def pillow_mpo(*frames: Image.Image, **options: object) -> bytes:
    out = io.BytesIO()
    frames[0].save(out, "MPO", save_all=True, append_images=list(frames[1:]), **options)
    return out.getvalue()


def mpo_by_hand(first: bytes, second: bytes, *, gap: bytes = b"", order: str = ">") -> bytes:
    """Two JPEGs as an MPO: an MP Index (DC-007 §5.2) in an APP2 right after the first SOI.

    ``gap`` goes between the pictures; ``order`` is the MP Header's byte order.
    """
    mark = b"MM\x00*" if order == ">" else b"II*\x00"
    entries_at = 8 + 2 + 3 * 12 + 4  # after the IFD: count, three entries, next-IFD offset
    app2_length = 2 + 4 + entries_at + 2 * 16
    first_length = len(first) + 2 + app2_length
    ifd = struct.pack(order + "H", 3) + b"".join(
        (
            struct.pack(order + "HHI4s", 0xB000, 7, 4, b"0100"),  # MPFVersion
            struct.pack(order + "HHII", 0xB001, 4, 1, 2),  # NumberOfImages
            struct.pack(order + "HHII", 0xB002, 7, 32, entries_at),  # MPEntry
            struct.pack(order + "I", 0),  # no further IFD
        )
    )
    entries = struct.pack(order + "IIIHH", 0x20030000, first_length, 0, 0, 0) + struct.pack(
        order + "IIIHH", 0, len(second), first_length + len(gap) - MP_HEADER, 0, 0
    )
    app2 = b"\xff\xe2" + struct.pack(">H", app2_length) + b"MPF\x00" + mark
    app2 += struct.pack(order + "I", 8) + ifd + entries
    assert len(app2) == 2 + app2_length
    return first[:2] + app2 + first[2:] + gap + second


def frames_decoded(data: bytes) -> list[bytes]:
    with Image.open(io.BytesIO(data)) as image:
        frames = []
        for index in range(getattr(image, "n_frames", 1)):
            image.seek(index)
            frames.append(image.tobytes())
        return frames


def kinds(container: bytes) -> list[str]:
    """The kinds of the parts of a jxl-parts container, read as its format is documented."""
    assert container[:9] == b"JXLPARTS\x01"
    pos, found = 17, []  # after magic, version, size and CRC-32
    while pos < len(container):
        kind, length = struct.unpack_from(">BI", container, pos)
        found.append({0: RAW, 1: JXL}[kind])
        pos += 5 + length
    assert pos == len(container)
    return found


def assert_rebuilt(data: bytes) -> bytes:
    compacted = jpeg_compact(data)
    assert compacted is not None
    assert compacted.form == FORM_PARTS
    assert len(compacted.data) < len(data)
    rebuilt = jpeg_restore(compacted.data, compacted.form)
    assert hashlib.sha256(rebuilt).hexdigest() == hashlib.sha256(data).hexdigest()
    return compacted.data


@pytest.mark.parametrize("exif", [False, True], ids=["plain", "with EXIF"])
def test_a_pillow_mpo_is_compacted_picture_by_picture(exif) -> None:
    options = {}
    if exif:
        options["exif"] = Image.Exif()
        options["exif"][0x010F] = "Maker"
    data = pillow_mpo(photo(1), photo(2), **options)
    with Image.open(io.BytesIO(data)) as image:
        assert (image.format, image.n_frames) == ("MPO", 2)
        offsets = [entry["DataOffset"] for entry in image.mpinfo[0xB002]]
    spans = mpo.pictures(data)
    assert len(spans) == 2
    assert spans[1][0] == data.index(b"MPF\x00") + 4 + offsets[1]
    assert spans[1][1] == len(data)
    assert kinds(assert_rebuilt(data)) == [JXL, JXL]


def test_bytes_between_pictures_are_kept_as_they_are() -> None:
    first, second = encode(photo(1), "JPEG"), encode(photo(2), "JPEG")
    gap = b"\x00padding between pictures\xff\xd8 not a picture"
    data = mpo_by_hand(first, second, gap=gap)
    assert frames_decoded(data) == frames_decoded(first) + frames_decoded(second)
    assert kinds(assert_rebuilt(data)) == [JXL, RAW, JXL]


@pytest.mark.parametrize("order", [">", "<"], ids=["big-endian", "little-endian"])
def test_an_mp_index_in_either_byte_order_is_read(order) -> None:
    first, second = encode(photo(1), "JPEG"), encode(photo(2), "JPEG")
    data = mpo_by_hand(first, second, order=order)
    assert len(frames_decoded(data)) == 2
    assert mpo.pictures(data) == [
        (0, len(data) - len(second)),
        (len(data) - len(second), len(data)),
    ]


def test_bytes_after_the_last_picture_are_kept() -> None:
    data = pillow_mpo(photo(1), photo(2)) + b"appended after the last picture" * 4
    assert kinds(assert_rebuilt(data)) == [JXL, JXL, RAW]


def test_a_picture_the_encoder_refuses_stays_as_it_is() -> None:
    data = pillow_mpo(photo(1), photo(2, "CMYK"))
    with Image.open(io.BytesIO(data)) as image:
        image.seek(1)
        assert image.mode == "CMYK"
    assert kinds(assert_rebuilt(data)) == [JXL, RAW]


def test_a_picture_over_the_pixel_cap_stays_as_it_is() -> None:
    data = pillow_mpo(photo(1, size=(256, 192)), photo(2, size=(192, 128)))
    compacted = jpeg_compact(data, max_pixels=192 * 128)
    assert compacted is not None
    assert kinds(compacted.data) == [RAW, JXL]
    assert jpeg_restore(compacted.data, compacted.form) == data
    assert jpeg_compact(data, max_pixels=100 * 100) is None  # no picture may be transcoded


@pytest.mark.parametrize(
    "damage",
    ["offset past the end", "offset into the first picture", "offset not at an SOI", "no index"],
)
def test_pictures_a_damaged_mp_index_does_not_find_are_kept_as_bytes(damage) -> None:
    first, second = encode(photo(1), "JPEG"), encode(photo(2), "JPEG")
    data = bytearray(mpo_by_hand(first, second))
    offset_at = MP_HEADER + 8 + 2 + 3 * 12 + 4 + 16 + 8  # the second entry's DataOffset
    (offset,) = struct.unpack_from(">I", data, offset_at)
    changed = {
        "offset past the end": len(data),
        "offset into the first picture": 20,
        "offset not at an SOI": offset + 1,
        "no index": None,
    }[damage]
    if changed is None:
        data[MP_HEADER : MP_HEADER + 4] = b"XX\x00*"  # not a TIFF byte-order mark
    else:
        struct.pack_into(">I", data, offset_at, changed)
    data = bytes(data)
    assert mpo.pictures(data) == [(0, len(data) - len(second))]
    assert kinds(assert_rebuilt(data)) == [JXL, RAW]


def test_an_entry_whose_size_is_too_small_for_its_picture_is_ignored() -> None:
    first, second = encode(photo(1), "JPEG"), encode(photo(2), "JPEG")
    data = bytearray(mpo_by_hand(first, second))
    size_at = MP_HEADER + 8 + 2 + 3 * 12 + 4 + 16 + 4  # the second entry's Size
    struct.pack_into(">I", data, size_at, len(second) - 2)  # cuts its EOI off
    assert mpo.pictures(bytes(data)) == [(0, len(data) - len(second))]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", []),
        (b"\x89PNG\r\n\x1a\n", []),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", []),  # no EOI
    ],
    ids=["empty", "PNG", "cut short"],
)
def test_what_is_not_a_complete_jpeg_has_no_pictures(data, expected) -> None:
    assert mpo.pictures(data) == expected


def test_a_plain_jpeg_is_one_picture_and_its_pixels_come_from_its_frame_header() -> None:
    data = encode(photo(1, size=(200, 120)), "JPEG", progressive=True)
    assert mpo.pictures(data) == [(0, len(data))]
    assert mpo.frame_pixels(data) == 200 * 120
