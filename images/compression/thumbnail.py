"""Thumbnails: a stored image scaled down to fit a square, as WebP or JPEG.

Pure bytes -> bytes with Pillow; no Django. The input is an image this
service stored, so it is already known to decode within the operator's
limits; animations contribute their first frame.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image

SIZE_MIN = 16
SIZE_MAX = 1024
SIZE_DEFAULT = 256

# The formats we make, in order of preference, each with the word that names
# it in cache keys and ETags: WebP is smaller and keeps transparency; JPEG is
# there for clients that do not take WebP.
EXTENSIONS = {"image/webp": "webp", "image/jpeg": "jpeg"}
CONTENT_TYPES = tuple(EXTENSIONS)
_SAVE_OPTIONS = {
    "image/webp": {"format": "WEBP", "quality": 80, "method": 4},
    "image/jpeg": {"format": "JPEG", "quality": 85, "optimize": True},
}
# EXIF orientation (tag 274) -> the transpose that shows the image upright,
# as browsers do when they display the full image.
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_ORIENTATION = 0x0112
_WIDE_GREY = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


@dataclass(frozen=True)
class Thumbnail:
    data: bytes
    content_type: str
    width: int
    height: int


def thumbnail_make(data: bytes, *, size: int, content_type: str) -> Thumbnail:
    """Scale ``data`` down to fit in ``size`` x ``size`` pixels, keeping its aspect ratio.

    Never enlarges: a smaller image keeps its own dimensions. ``content_type``
    is one of :data:`CONTENT_TYPES`. Transparency is kept in WebP and laid
    on white in JPEG; 16-bit grey is scaled (not clipped) to 8 bits; EXIF
    orientation is applied. Raises ``ValueError`` for a size out of bounds
    or an unknown content type.
    """
    if not SIZE_MIN <= size <= SIZE_MAX:
        raise ValueError(f"size must be between {SIZE_MIN} and {SIZE_MAX}")
    if content_type not in _SAVE_OPTIONS:
        raise ValueError(f"thumbnails are made as {' or '.join(CONTENT_TYPES)}")
    with warnings.catch_warnings():
        # The image was accepted under the operator's pixel limit, which may
        # exceed Pillow's own bomb warning threshold.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as image:
            orientation = image.getexif().get(_EXIF_ORIENTATION)
            # draft() lets JPEG decode at 1/2, 1/4 or 1/8 scale straight away.
            image.draft("RGB", (size, size))
            small = _eight_bit(image, keep_alpha=content_type == "image/webp")
            small.thumbnail((size, size), Image.Resampling.LANCZOS)
    if orientation in _ORIENTATION:
        small = small.transpose(_ORIENTATION[orientation])
    out = io.BytesIO()
    small.save(out, **_SAVE_OPTIONS[content_type])
    return Thumbnail(out.getvalue(), content_type, small.width, small.height)


def _eight_bit(image: Image.Image, *, keep_alpha: bool) -> Image.Image:
    """``image`` as 8-bit L, RGB or RGBA (WebP and JPEG take nothing else)."""
    if image.mode in _WIDE_GREY:
        # convert("L") clips 16-bit values at 255; scale them instead.
        return image.convert("I").point(lambda value: value / 256).convert("L")
    has_alpha = "A" in image.getbands() or "transparency" in image.info
    if has_alpha and keep_alpha:
        return image.convert("RGBA")
    if has_alpha:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, "white")
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    if image.mode in ("L", "RGB"):
        image.load()
        return image
    return image.convert("L" if image.mode == "1" else "RGB")
