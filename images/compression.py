"""Lossless image compression: bytes in, bytes out (API.md §2, §9 "Lossless", "Limits").

Pure code: no Django, DRF or aiocoap. Every failure caused by the input is one
of the typed errors of :mod:`images.errors` (``InvalidImage`` or
``ImageTooLarge``); nothing else escapes for bad input.

What is stored, by received format:

- PNG (and APNG): oxipng with every reduction off, so colour type, bit depth,
  palette and metadata chunks stay as received.
- JPEG: mozjpeg's lossless optimisation (Huffman tables, progressive scans)
  of the unchanged DCT coefficients, copying every marker (ICC, EXIF, XMP),
  in a child process because it can exit() on corrupt input. A multi-picture
  file (MPO) or one with bytes after its EOI is kept as is, because the
  optimiser would drop everything after the first picture.
- BMP and uncompressed single-page TIFF in a mode PNG can hold: PNG.
- GIF and WebP: as received. The stack has no re-encoder for them that is
  known to be lossless for every frame, disposal and blend, so we do not try.

Whatever an optimiser produces is decoded again and must match the received
image frame by frame, and must be strictly smaller; otherwise the received
bytes are stored. So the stored image is never larger than the received one.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import re
import struct
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import oxipng
from PIL import Image, ImageFile, UnidentifiedImageError

from images import sources
from images.errors import DomainError, ImageTooLarge, InvalidImage
from images.pngcheck import png_data_complete


@dataclass(frozen=True)
class Limits:
    """Operator limits (API.md §9 "Limits"); every check happens before pixels are decoded."""

    max_bytes: int = 50_000_000  # size of the received image
    max_pixels: int = 100_000_000  # width * height, from the header
    max_frames: int = 1_000


@dataclass(frozen=True)
class ImageInfo:
    """What :func:`probe` learns without decoding pixel data."""

    format: str  # Pillow format name: "PNG", "JPEG" (MPO included), "GIF", "WEBP", "BMP", "TIFF"
    content_type: str
    width: int
    height: int
    frames: int


@dataclass(frozen=True)
class Compressed:
    """What to store. ``content_type`` describes ``data``, which may differ from the input's."""

    data: sources.Source  # the input itself when nothing smaller was found
    content_type: str
    width: int
    height: int
    original_size: int
    frames: int
    method: str  # "oxipng", "mozjpeg", "converted-png" or "original"


_CONTENT_TYPES = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
}
_EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/gif": "gif",
    "image/webp": "webp",
    "image/bmp": "bmp",
    "image/tiff": "tiff",
}
# Only these Pillow plugins may open input: no PSD, ICO, EPS (Ghostscript)...
# The JPEG plugin opens MPO files too (as format "MPO").
_PILLOW_FORMATS = tuple(_CONTENT_TYPES)
_UNSUPPORTED = "not a supported image (PNG, JPEG, GIF, WebP, BMP, TIFF) or its header is damaged"

# What Pillow's plugins raise for malformed input, beyond its own subclasses of
# OSError (UnidentifiedImageError, "image file is truncated"): struct.error and
# IndexError from short headers, EOFError from missing frames, and so on.
_DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
)

# Modes Pillow reads back from a PNG unchanged: the targets of BMP/TIFF conversion.
_PNG_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "I;16"})

# oxipng settings chosen by measurement (bench/compress.py --png-levels): on the
# corpus PNGs level 2 stores 0.8 % more than level 6 in a sixth of the time
# (skimage brick.png, 106 kB: about 80 ms against 500 ms).
# Every reduction is off and no chunk is stripped: API.md §9 forbids changing
# colour type, bit depth or palette, and wants ICC, EXIF and text kept.
_OXIPNG_OPTIONS = {
    "level": 2,
    "interlace": None,  # keep the received interlacing
    "bit_depth_reduction": False,
    "color_type_reduction": False,
    "palette_reduction": False,
    "grayscale_reduction": False,
    "scale_16": False,
    "optimize_alpha": False,
    "strip": oxipng.StripChunks.none(),
}

# Pillow keeps only the high byte of 16-bit colour PNG samples. Decoding the
# same stream again with these raw modes (same bits per pixel, so the PNG
# filters are undone identically) exposes the low bytes; for grey + alpha,
# "RGBA" reads L-high, L-low, A-high, A-low as four 8-bit channels.
_LOW_BYTE_RAWMODES = {"RGB;16B": "RGB;16L", "RGBA;16B": "RGBA;16L", "LA;16B": "RGBA"}

# mozjpeg-lossless-optimization (1.3.2) gives only its decoder a recoverable
# error handler: an encoder error, such as "DCT coefficient out of range" from
# a corrupt file that Pillow decodes happily, calls exit() and would end the
# whole server process. So it runs in a child interpreter (about 15 ms extra;
# -P keeps the working directory off its sys.path).
_MOZJPEG_CHILD = (
    "import sys, mozjpeg_lossless_optimization as m;"
    "sys.stdout.buffer.write(m.optimize(sys.stdin.buffer.read(), copy=m.COPY_MARKERS.ALL))"
)
_MOZJPEG_TIMEOUT_SECONDS = 60

# Where entropy-coded JPEG data ends: a 0xFF that is not a stuffed 0xFF00, a
# restart marker or a fill byte (ITU-T T.81 §B.1.1.5, §F.1.2.3).
_ENTROPY_CODED_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")

_HASH_STRIP_PIXELS = 1 << 20  # hash frames in strips: never a second copy of a whole frame


def probe(data: sources.Source, limits: Limits = Limits()) -> ImageInfo:
    """Identify ``data`` and check it against ``limits`` without decoding pixel data.

    Raises ``InvalidImage`` for empty, unrecognised or unsupported data or a
    broken header, and ``ImageTooLarge`` (``limit`` set for the byte limit)
    when the bytes, the pixels or the frames exceed ``limits``. Frames are
    counted up to ``limits.max_frames + 1`` at most, so a hostile animation
    costs no more than that. A header that passes does not prove the pixel
    data is intact: :func:`compress` decodes every frame.
    """
    length = sources.size(data)
    if not length:
        raise InvalidImage("the image is empty")
    if length > limits.max_bytes:
        raise ImageTooLarge(
            f"the image is {length:,} bytes; the limit is {limits.max_bytes:,}",
            limit=limits.max_bytes,
        )
    with _opened(data, limits) as image:
        width, height = image.size
        image_format = "JPEG" if image.format == "MPO" else str(image.format)
        cap = limits.max_frames + 1
        if image_format == "GIF":
            # A GIF frame may lie outside the logical screen; Pillow then grows
            # the canvas while seeking, so the whole extent is checked here.
            frames, canvas_width, canvas_height = _gif_layout(sources.read_all(data), cap)
            _check_pixels(canvas_width, canvas_height, limits)
        elif image_format == "TIFF":
            frames = _tiff_pages(image, cap)
        else:
            # PNG (acTL), WebP, MPO: the count is in a header.
            frames = getattr(image, "n_frames", 1)
        if frames > limits.max_frames:
            raise ImageTooLarge(f"the image has more than {limits.max_frames:,} frames")
        return ImageInfo(image_format, _CONTENT_TYPES[image_format], width, height, frames)


def compress(data: sources.Source, limits: Limits = Limits(), *, fast: bool = False) -> Compressed:
    """Return what to store for ``data``: a losslessly smaller encoding, or ``data`` itself.

    ``data`` may be a file (a spooled upload): it is read into memory unless
    it is a still PNG on the fast path, which is checked reading it in pieces.

    ``fast`` is for the request path when a background pass follows
    (IMAGES_OPTIMIZE=deferred): the image is checked as always (every frame
    decoded, or for a still PNG its encoding checked by
    :func:`images.pngcheck.png_data_complete`), BMP/TIFF still become PNG
    (at oxipng's quickest level) so that the stored format never changes
    later, and PNG and JPEG optimisation is left to the background. That
    keeps the request's CPU and memory to one decode at most.

    The stored bytes decode (with Pillow) to the same size, mode, bit depth,
    palette, transparency and pixels in every frame, with the same frame
    durations; ICC, EXIF and text metadata are kept; ``len(result.data) <=
    len(data)``. Raises what :func:`probe` raises, and ``InvalidImage`` when
    any frame cannot be fully decoded (truncated or corrupt data).
    """
    info = probe(data, limits)
    if fast and info.format == "PNG" and png_data_complete(data):
        # Nothing to try for a PNG on the fast path, so no reference decode:
        # checking the encoding is enough, in bounded memory.
        return Compressed(
            data=data,
            content_type=info.content_type,
            width=info.width,
            height=info.height,
            original_size=sources.size(data),
            frames=info.frames,
            method="original",
        )
    data = sources.read_all(data)
    # Decoding every frame validates the input and is the reference the
    # candidate must match.
    reference = _fingerprint(data, limits)
    stored, content_type, method = data, info.content_type, "original"
    candidate = _optimised(data, info, limits, fast=fast)
    if candidate is not None and len(candidate[0]) < len(data):
        try:
            if _fingerprint(candidate[0], limits) == reference:
                stored, content_type, method = candidate
        except DomainError:
            pass  # an optimiser produced something undecodable: keep the original
    return Compressed(
        data=stored,
        content_type=content_type,
        width=info.width,
        height=info.height,
        original_size=len(data),
        frames=info.frames,
        method=method,
    )


def extension_for(content_type: str) -> str:
    """File extension (no dot) for a content type :func:`compress` produces; "bin" otherwise."""
    return _EXTENSIONS.get(content_type.split(";")[0].strip().lower(), "bin")


def pixels_equal(a: bytes, b: bytes) -> bool:
    """True when Pillow decodes ``a`` and ``b`` to the same image.

    Same size, and in every frame the same mode, palette, transparency,
    duration and pixel values, 16-bit PNG samples compared at full precision.
    The encodings may differ (PNG against BMP, say). False when either cannot
    be decoded within the default :class:`Limits`.
    """
    try:
        return _fingerprint(a, Limits()) == _fingerprint(b, Limits())
    except DomainError:
        return False


@contextmanager
def _opened(data: sources.Source, limits: Limits) -> Iterator[ImageFile.ImageFile]:
    """Open ``data`` with Pillow (headers only) and map every failure in the block to our errors.

    The pixel limit is checked before anything is decoded. Pillow's own bomb
    guard is a process-wide setting (``Image.MAX_IMAGE_PIXELS``); it must not
    refuse what the operator allows, and its warning must not leak out.
    """
    _lift_pillow_bomb_limit(limits.max_pixels)
    try:
        # catch_warnings swaps the process-wide filter list (not thread-safe
        # before Python 3.14); the worst a race can do is silence or show one
        # DecompressionBombWarning elsewhere, which is acceptable.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            head = sources.head(data, 32)
            if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
                # libwebp allocates the whole canvas when Pillow opens the file.
                _check_pixels(*_webp_canvas(head), limits)
            try:
                image = Image.open(sources.as_file(data), formats=_PILLOW_FORMATS)
            except UnidentifiedImageError as exc:
                raise InvalidImage(_UNSUPPORTED) from exc
            with image:
                _check_pixels(*image.size, limits)
                yield image
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"the image has more than {limits.max_pixels:,} pixels") from exc
    except MemoryError as exc:
        raise ImageTooLarge("the image needs more memory to decode than is available") from exc
    except _DECODE_ERRORS as exc:
        raise InvalidImage(f"the image data is corrupt or truncated ({exc})") from exc


def _lift_pillow_bomb_limit(max_pixels: int) -> None:
    # Pillow raises DecompressionBombError above 2 * MAX_IMAGE_PIXELS (about
    # 179 megapixels by default), which is above our default limit, so this
    # only changes the global when an operator allows more; it never lowers it.
    current = Image.MAX_IMAGE_PIXELS
    if current is not None and 2 * current < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels


def _check_pixels(width: int, height: int, limits: Limits) -> None:
    if width * height > limits.max_pixels:
        raise ImageTooLarge(
            f"the image is {width}x{height} pixels; the limit is {limits.max_pixels:,} pixels"
        )


def _webp_canvas(data: bytes) -> tuple[int, int]:
    """Canvas size from a WebP header (RFC 9649 §2.5-2.7); (0, 0) for a header we do not know."""
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack_from("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF
    return 0, 0


def _gif_layout(data: bytes, cap: int) -> tuple[int, int, int]:
    """Count a GIF's frames (stopping at ``cap``) and the canvas they cover, without decoding.

    Walks the block structure of GIF89a (§§18-27): extensions and image
    descriptors followed by data sub-blocks. Stray bytes are skipped one at a
    time, as Pillow does.
    """
    width, height = struct.unpack_from("<HH", data, 6)
    pos = 13 + _gif_palette_size(data[10])
    frames = 0
    while pos < len(data) and frames < cap:
        tag = data[pos]
        if tag == 0x3B:  # trailer
            break
        if tag == 0x21:  # extension: introducer, label, sub-blocks
            pos += 2
        elif tag == 0x2C and pos + 10 <= len(data):  # image descriptor
            left, top, frame_width, frame_height, flags = struct.unpack_from("<4HB", data, pos + 1)
            width, height = max(width, left + frame_width), max(height, top + frame_height)
            frames += 1
            pos += 10 + _gif_palette_size(flags) + 1  # + LZW minimum code size
        else:
            pos += 1
            continue
        while pos < len(data) and data[pos]:
            pos += data[pos] + 1
        pos += 1
    return max(frames, 1), width, height


def _gif_palette_size(flags: int) -> int:
    return 3 << ((flags & 7) + 1) if flags & 0x80 else 0


def _tiff_covered(image: ImageFile.ImageFile) -> None:
    """InvalidImage unless the page's strips or tiles cover every pixel.

    Pillow fills rows that no strip covers with zeros instead of failing, so
    a truncated TIFF would otherwise decode "successfully" (and a tiny file
    could claim 100,000 rows of work).
    """
    area = sum((t.extents[2] - t.extents[0]) * (t.extents[3] - t.extents[1]) for t in image.tile)
    if area < image.width * image.height:
        raise InvalidImage("the TIFF is truncated: its strips do not cover the image")


def _tiff_pages(image: ImageFile.ImageFile, cap: int) -> int:
    # Pillow's n_frames walks the whole IFD chain; seeking reads one IFD at a
    # time (no pixel data), so we can stop at the cap.
    _tiff_covered(image)
    for page in range(1, cap):
        try:
            image.seek(page)
        except EOFError:
            return page
        _tiff_covered(image)
    return cap


def _frames(
    image: ImageFile.ImageFile, max_frames: int, rawmode: str | None = None
) -> Iterator[ImageFile.ImageFile]:
    """Decode each frame in turn and yield ``image`` positioned on it (one frame in memory).

    ``rawmode`` replaces the raw mode Pillow would unpack samples with.
    """
    for index in itertools.count():
        try:
            image.seek(index)
        except EOFError:
            return
        if index == max_frames:
            raise ImageTooLarge(f"the image has more than {max_frames:,} frames")
        if rawmode is not None:
            image.tile = [tile._replace(args=rawmode) for tile in image.tile]
        image.load()
        yield image


def _fingerprint(data: bytes, limits: Limits) -> bytes:
    """SHA-256 over everything :func:`pixels_equal` compares; decodes every frame.

    Raises ``InvalidImage`` / ``ImageTooLarge`` like :func:`probe` for data
    that cannot be decoded.
    """
    digest = hashlib.sha256()
    with _opened(data, limits) as image:
        digest.update(repr(image.size).encode())
        low_bytes = None
        if image.format == "PNG" and image.tile:
            low_bytes = _LOW_BYTE_RAWMODES.get(image.tile[0].args)
        for frame in _frames(image, limits.max_frames):
            described = (
                frame.size,
                frame.mode,
                frame.getpalette(),
                frame.info.get("transparency"),
                frame.info.get("duration"),
            )
            digest.update(repr(described).encode())
            _hash_pixels(digest.update, frame)
    if low_bytes is not None:
        digest.update(b"16-bit")
        with _opened(data, limits) as image:
            for frame in _frames(image, limits.max_frames, rawmode=low_bytes):
                _hash_pixels(digest.update, frame)
    return digest.digest()


def _hash_pixels(update: Callable[[bytes], object], frame: Image.Image) -> None:
    width, height = frame.size
    rows = max(1, _HASH_STRIP_PIXELS // max(width, 1))
    for top in range(0, height, rows):
        update(frame.crop((0, top, width, min(height, top + rows))).tobytes())


def _optimised(
    data: bytes, info: ImageInfo, limits: Limits, *, fast: bool
) -> tuple[bytes, str, str] | None:
    """An unverified candidate (bytes, content type, method) for ``data``, or None."""
    options = {**_OXIPNG_OPTIONS, "level": 0} if fast else _OXIPNG_OPTIONS
    try:
        if info.format == "PNG" and not fast:
            candidate = oxipng.optimize_from_memory(data, **options)
            # With reductions off oxipng keeps the IHDR; a changed one means a
            # changed bit depth or colour type, which a Pillow decode can miss.
            return (candidate, "image/png", "oxipng") if candidate[:33] == data[:33] else None
        if (
            not fast
            and info.format == "JPEG"
            and info.frames == 1
            and _jpeg_length(data) == len(data)
        ):
            candidate = _mozjpeg(data)
            return None if candidate is None else (candidate, "image/jpeg", "mozjpeg")
        if info.format in ("BMP", "TIFF") and info.frames == 1:
            png = _as_png(data, limits)
            if png is not None:
                return (
                    oxipng.optimize_from_memory(png, **options),
                    "image/png",
                    "converted-png",
                )
    except (oxipng.PngError, DomainError):
        pass  # an optimiser or Pillow refused this input: the original is stored
    return None


def _mozjpeg(data: bytes) -> bytes | None:
    """mozjpeg's lossless optimisation of ``data``, copying every marker; None if it fails."""
    try:
        child = subprocess.run(
            [sys.executable, "-P", "-c", _MOZJPEG_CHILD],
            input=data,
            capture_output=True,
            timeout=_MOZJPEG_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return child.stdout if child.returncode == 0 and child.stdout else None


def _as_png(data: bytes, limits: Limits) -> bytes | None:
    """PNG of a BMP or uncompressed TIFF, keeping ICC and resolution; None if unsuitable."""
    with _opened(data, limits) as image:
        # Compressed TIFFs (LZW, Deflate, JPEG...) are often already small and
        # may carry tags PNG cannot; only raw TIFF is worth converting.
        if image.format == "TIFF" and image.info.get("compression") != "raw":
            return None
        if image.mode not in _PNG_MODES:
            return None  # CMYK, F, I, I;16B...: PNG cannot hold them unchanged
        image.load()
        out = io.BytesIO()
        options = {key: image.info[key] for key in ("icc_profile", "dpi") if image.info.get(key)}
        image.save(out, "PNG", compress_level=1, **options)  # oxipng recompresses anyway
        return out.getvalue()


def _jpeg_length(data: bytes) -> int | None:
    """Offset just past the EOI that ends the first picture in ``data``; None if there is none.

    Follows the marker segments of ITU-T T.81 §B.1.1, skipping the
    entropy-coded data after each SOS.
    """
    pos = 2  # after SOI
    while pos + 1 < len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xD9:  # EOI
            return pos + 2
        if marker == 0xFF:  # fill byte (§B.1.1.2)
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            pos += 2
            continue
        if pos + 4 > len(data):
            return None
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:  # SOS: skip the entropy-coded segment
            found = _ENTROPY_CODED_END.search(data, pos)
            if found is None:
                return None
            pos = found.start()
    return None
