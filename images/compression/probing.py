"""What an image is and whether it is within the limits, without decoding pixel data.

API.md §9 "Limits": the bytes, the pixels (width x height, from the header)
and the frames are checked before anything is decoded. GIF, TIFF and WebP
headers are walked here because Pillow would otherwise allocate or seek
first: a GIF frame may lie outside the logical screen, a TIFF's page count
is a walk of its whole IFD chain, and libwebp allocates the canvas when the
file is opened.
"""

from __future__ import annotations

import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from PIL import Image, ImageFile, UnidentifiedImageError

from images import sources
from images.compression import mpo
from images.compression.jpeg import jpeg_scans
from images.errors import ImageTooLarge, InvalidImage


@dataclass(frozen=True)
class Limits:
    """Operator limits (API.md §9 "Limits"); every check happens before pixels are decoded."""

    max_bytes: int = 50_000_000  # size of the received image
    max_pixels: int = 100_000_000  # width * height, from the header
    max_frames: int = 1_000
    # Scans of one JPEG picture: each is a pass over every pixel (API.md §15).
    max_jpeg_scans: int = 100


@dataclass(frozen=True)
class ImageInfo:
    """What :func:`probe` learns without decoding pixel data."""

    format: str  # Pillow format name: "PNG", "JPEG" (MPO included), "GIF", "WEBP", "BMP", "TIFF"
    content_type: str
    width: int
    height: int
    frames: int


CONTENT_TYPES = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
}
# Only these Pillow plugins may open input: no PSD, ICO, EPS (Ghostscript)...
# The JPEG plugin opens MPO files too (as format "MPO").
_PILLOW_FORMATS = tuple(CONTENT_TYPES)
_UNSUPPORTED = "not a supported image (PNG, JPEG, GIF, WebP, BMP, TIFF) or its header is damaged"

# What Pillow's plugins raise for malformed input, beyond its own subclasses of
# OSError (UnidentifiedImageError, "image file is truncated"): struct.error and
# IndexError from short headers, EOFError from missing frames, and so on.
DECODE_ERRORS = (
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


def probe(data: sources.Source, limits: Limits = Limits()) -> ImageInfo:
    """Identify ``data`` and check it against ``limits`` without decoding pixel data.

    Raises ``InvalidImage`` for empty, unrecognised or unsupported data or a
    broken header, and ``ImageTooLarge`` (``limit`` set for the byte limit)
    when the bytes, the pixels or the frames exceed ``limits``. Frames are
    counted up to ``limits.max_frames + 1`` at most, so a hostile animation
    costs no more than that. A header that passes does not prove the pixel
    data is intact: :func:`images.compression.compress` decodes every frame.
    """
    length = sources.size(data)
    if not length:
        raise InvalidImage("the image is empty")
    if length > limits.max_bytes:
        raise ImageTooLarge(
            f"the image is {length:,} bytes; the limit is {limits.max_bytes:,}",
            limit=limits.max_bytes,
        )
    with opened(data, limits) as image:
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
        if image_format == "JPEG":
            _check_jpeg(sources.read_all(data), limits)
        return ImageInfo(image_format, CONTENT_TYPES[image_format], width, height, frames)


# Samples per pixel by PNG colour type (ISO/IEC 15948 §11.2.2): grey, RGB,
# palette index, grey + alpha, RGBA.
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def decoded_bytes(data: sources.Source, info: ImageInfo) -> int:
    """The bytes of ``data``'s pixels once decoded, every frame: width x height x bytes per pixel.

    From the header alone: a PNG's bit depth and colour type (a 16-bit RGBA
    pixel is 8 bytes, as oxipng holds its rows), a JPEG's components and
    sample precision; 4 (RGBA) for the other formats. Less than a byte per
    pixel counts as one, as Pillow decodes it. What an optimizer's pass
    costs grows with this figure (:func:`images.compression.stored_form`).
    """
    per_pixel = 4
    if info.format == "PNG":
        head = sources.head(data, 26)
        if head[12:16] == b"IHDR" and len(head) == 26:
            per_pixel = max(1, head[24] * _PNG_CHANNELS.get(head[25], 4) // 8)
    elif info.format == "JPEG":
        header = mpo.frame(sources.read_all(data))
        if header is not None:
            per_pixel = header.components * -(-header.precision // 8)
    return info.width * info.height * per_pixel * info.frames


@contextmanager
def opened(data: sources.Source, limits: Limits) -> Iterator[ImageFile.ImageFile]:
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
            # Pillow's word on a malformed file ("appears to be a malformed
            # MPO file"): what we accept is decided here, and said in errors.
            warnings.simplefilter("ignore", UserWarning)
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
    except DECODE_ERRORS as exc:
        raise InvalidImage(f"the image data is corrupt or truncated ({exc})") from exc


def _check_jpeg(data: bytes, limits: Limits) -> None:
    """A JPEG's decoding cost, bounded from its markers before anything is decoded (API.md §15).

    A progressive JPEG's decoder passes over the whole image once per scan,
    so a small file repeating a scan thousands of times costs seconds of CPU
    per decode; and a multi-picture index may list thousands of pictures
    that Pillow never counts as frames. Both are counted here: the index's
    entries against ``max_frames``, each indexed picture's scans against
    ``max_jpeg_scans``.
    """
    pictures = mpo.indexed_pictures(data)
    if pictures > limits.max_frames:
        raise ImageTooLarge(
            f"the multi-picture index lists {pictures:,} pictures;"
            f" the limit is {limits.max_frames:,} frames"
        )
    with memoryview(data) as view:
        for start, end in mpo.pictures(data):
            scans = jpeg_scans(view[start:end])
            if scans > limits.max_jpeg_scans:
                raise ImageTooLarge(
                    f"a picture of the JPEG has {scans:,} scans;"
                    f" the limit is {limits.max_jpeg_scans:,} (IMAGES_MAX_JPEG_SCANS)"
                )


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
