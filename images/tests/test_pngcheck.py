"""The bounded-memory PNG check refuses exactly what Pillow's full decode refuses."""

from __future__ import annotations

import io
import random
import zlib

import oxipng
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import IMAGE_CORPUS
from images import compression
from images.compression.pngcheck import png_data_complete
from images.errors import DomainError, InvalidImage

CORPUS = IMAGE_CORPUS


def noisy_png(mode: str, size: tuple[int, int], seed: int, interlaced: bool = False) -> bytes:
    """A PNG of random pixels (so every filter type and plenty of zlib data occur)."""
    rng = random.Random(seed)
    if mode == "I;16":
        image = Image.frombytes(mode, size, rng.randbytes(size[0] * size[1] * 2))
    else:
        bands = len(Image.new(mode, (1, 1)).getbands())
        bits = 1 if mode == "1" else 8
        raw = rng.randbytes((size[0] * bits * bands + 7) // 8 * size[1])
        image = Image.frombytes(mode, size, raw)
        if mode == "P":
            image.putpalette(rng.randbytes(768))
    out = io.BytesIO()
    image.save(out, "PNG")
    data = out.getvalue()
    if interlaced:
        data = oxipng.optimize_from_memory(
            data, level=0, interlace=oxipng.Interlacing.Adam7, force=True, **_KEEP
        )
    return data


_KEEP = {
    "bit_depth_reduction": False,
    "color_type_reduction": False,
    "palette_reduction": False,
    "grayscale_reduction": False,
}

MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"]


def pillow_decodes(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Exception:  # noqa: BLE001 - any failure is "does not decode"
        return False
    return True


@pytest.mark.parametrize("interlaced", [False, True], ids=["plain", "adam7"])
@pytest.mark.parametrize("mode", MODES)
def test_an_intact_png_passes(mode, interlaced):
    data = noisy_png(mode, (37, 23), seed=1, interlaced=interlaced)
    assert (data[28] == 1) is interlaced  # the IHDR interlace byte
    assert png_data_complete(data)


def test_every_png_of_the_corpus_passes():
    pngs = sorted(CORPUS.glob("*.png"))
    assert pngs, f"no PNG in {CORPUS}"
    for path in pngs:
        assert png_data_complete(path.read_bytes()), path.name


def test_an_animated_png_is_left_to_pillow():
    frames = [Image.new("RGB", (8, 8), colour) for colour in ("red", "blue")]
    out = io.BytesIO()
    frames[0].save(out, "PNG", save_all=True, append_images=frames[1:], duration=100)
    assert png_data_complete(out.getvalue()) is False


@pytest.mark.parametrize("interlaced", [False, True], ids=["plain", "adam7"])
def test_every_truncation_is_judged_as_pillow_judges_it(interlaced):
    data = noisy_png("RGB", (40, 30), seed=2, interlaced=interlaced)
    for cut in range(33, len(data)):
        judged(data[:cut])


def judged(data: bytes) -> None:
    """Assert the deferred path refuses ``data`` exactly when Pillow's full decode does.

    The check either answers (complete, or refused) or leaves the file to
    Pillow (``False``), and ``compress(effort=CHECK)`` then decodes it. The one
    allowed difference: a file cut inside its IDAT data is refused, where
    Pillow may still decode every row.
    """
    try:
        compression.probe(data)
    except DomainError:
        return  # refused before either decoder runs
    try:
        verdict: bool | str = png_data_complete(data)
    except InvalidImage as exc:
        if "truncated inside its image data" in str(exc):
            return
        verdict = "refused"
    if verdict == "refused":
        assert not pillow_decodes(data), len(data)
    elif verdict:
        assert pillow_decodes(data), len(data)
    try:
        compression.compress(data, effort=compression.CHECK)
        accepted = True
    except DomainError:
        accepted = False
    assert accepted == pillow_decodes(data), (len(data), verdict)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mode=st.sampled_from(MODES),
    interlaced=st.booleans(),
    seed=st.integers(0, 1000),
    flips=st.lists(st.tuples(st.integers(33, 10**6), st.integers(1, 255)), min_size=1, max_size=3),
)
def test_damaged_bytes_are_judged_as_pillow_judges_them(mode, interlaced, seed, flips):
    data = bytearray(noisy_png(mode, (19, 11), seed, interlaced))
    for position, mask in flips:
        data[position % len(data)] ^= mask
    judged(bytes(data))


def test_a_large_png_is_checked_without_its_raster():
    """3000 x 3000 RGB: Pillow's raster would be 36 MB; the check holds pieces of 256 KiB."""
    import tracemalloc

    data = noisy_png("RGB", (3000, 3000), seed=3)
    tracemalloc.start()
    try:
        assert png_data_complete(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * 2**20, peak


def chunk(kind: bytes, body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")


def png_from_scanlines(
    width: int,
    height: int,
    scanlines: bytes,
    *,
    colour: int = 0,
    before: bytes = b"",
    after: bytes = b"",
) -> bytes:
    """An 8-bit PNG around ``scanlines`` (each row: a filter byte, then the samples).

    ``before`` and ``after`` are chunks placed before and after the IDAT chunk.
    """
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, colour, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + before
        + chunk(b"IDAT", zlib.compress(scanlines))
        + after
        + chunk(b"IEND", b"")
    )


GREY_ROWS = b"".join(bytes([0]) + bytes(range(10 * row, 10 * row + 10)) for row in range(6))


@pytest.mark.parametrize(
    "after",
    [
        b"",
        chunk(b"tEXt", b"Comment\x00fine"),
        chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"fine")),
        chunk(b"zTXt", b"Comment\x00\x01" + zlib.compress(b"unknown method")),
        chunk(b"zTXt", b"Big\x00\x00" + zlib.compress(bytes(2_000_000))),
        chunk(b"pHYs", b""),
        chunk(b"gAMA", b"\x00"),
        chunk(b"fdAT", b"\x00\x00\x00\x01" + zlib.compress(GREY_ROWS)),
        chunk(b"tIME", b"\x07\xe8\x01\x01\x00\x00\x00"),
        chunk(b"IDAT", b""),
        b"\x00\x00\x00\x10tEXt",  # cut after its header
    ],
    ids=lambda after: after[4:8].decode("latin-1") + f"-{len(after)}",
)
def test_chunks_after_the_image_data_are_judged_as_pillow_judges_them(after):
    data = png_from_scanlines(10, 6, GREY_ROWS, after=after)
    judged(data)
    whole = len(after) >= 12
    if not after or (whole and after[4:8] in (b"IDAT", b"tEXt", b"tIME")):
        assert png_data_complete(data)  # nothing there can make Pillow fail
    else:
        assert png_data_complete(data) is False  # left to Pillow


@pytest.mark.parametrize("entries", [2, 256, 257])
def test_a_palette_is_judged_as_pillow_judges_it(entries):
    palette = chunk(b"PLTE", bytes(range(256)) * 3 if entries == 256 else bytes(3 * entries))
    if entries == 257:
        palette = chunk(b"PLTE", bytes(3 * 257))
    rows = b"".join(bytes([0]) + bytes(row % 2 for _ in range(10)) for row in range(6))
    judged(png_from_scanlines(10, 6, rows, colour=3, before=palette))


def test_a_longer_ihdr_is_judged_as_pillow_judges_it():
    data = png_from_scanlines(10, 6, GREY_ROWS)
    longer = data[:8] + chunk(b"IHDR", data[16:29] + b"\x00\x00") + data[33:]
    judged(longer)


@pytest.mark.parametrize("filter_type", [0, 1, 2, 3, 4, 5, 255])
def test_a_scanline_filter_type_must_be_known(filter_type):
    rows = [GREY_ROWS[11 * row : 11 * row + 11] for row in range(6)]
    rows[4] = bytes([filter_type]) + rows[4][1:]
    data = png_from_scanlines(10, 6, b"".join(rows))
    judged(data)
    if filter_type > 4:
        with pytest.raises(InvalidImage, match="filter type"):
            png_data_complete(data)


@pytest.mark.parametrize("rows", [0, 1, 5, 6, 7])
@pytest.mark.parametrize("extra", [0, 3])
def test_a_zlib_stream_may_end_early_only_after_a_whole_scanline(rows, extra):
    """Pillow leaves missing rows zero and ignores extra data, but not a partial row."""
    scanlines = b"".join(bytes([0]) + bytes(range(10)) for _ in range(rows)) + bytes(extra)
    data = png_from_scanlines(10, 6, scanlines)
    judged(data)
    if rows == 0 or (rows < 6 and extra):
        with pytest.raises(InvalidImage):
            png_data_complete(data)
    else:
        assert png_data_complete(data)
    idat = data.index(b"IDAT")
    length = int.from_bytes(data[idat - 4 : idat], "big")
    for cut in range(idat + 4, idat + 4 + length):  # inside the stream, Adler-32 included
        judged(data[:cut])
