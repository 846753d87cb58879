"""Whether two encodings are the same image: the check every optimizer's output must pass.

"Same" is API.md §9 "Lossless": Pillow decodes both to the same size, and in
every frame the same mode, palette, transparency, duration and pixel values,
16-bit PNG samples compared at full precision. Each image is reduced to a
SHA-256 fingerprint while it is decoded one frame at a time, so comparing
never holds two decoded images (nor a whole decoded animation) at once.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterator

from PIL import Image, ImageFile

from images.compression.probing import Limits, opened
from images.errors import DomainError, ImageTooLarge

# Pillow keeps only the high byte of 16-bit colour PNG samples. Decoding the
# same stream again with these raw modes (same bits per pixel, so the PNG
# filters are undone identically) exposes the low bytes; for grey + alpha,
# "RGBA" reads L-high, L-low, A-high, A-low as four 8-bit channels.
_LOW_BYTE_RAWMODES = {"RGB;16B": "RGB;16L", "RGBA;16B": "RGBA;16L", "LA;16B": "RGBA"}

_HASH_STRIP_PIXELS = 1 << 20  # hash frames in strips: never a second copy of a whole frame


def pixels_equal(a: bytes, b: bytes) -> bool:
    """True when Pillow decodes ``a`` and ``b`` to the same image.

    Same size, and in every frame the same mode, palette, transparency,
    duration and pixel values, 16-bit PNG samples compared at full precision.
    The encodings may differ (PNG against BMP, say). False when either cannot
    be decoded within the default :class:`Limits`.
    """
    try:
        return fingerprint(a, Limits()) == fingerprint(b, Limits())
    except DomainError:
        return False


def fingerprint(data: bytes, limits: Limits) -> bytes:
    """SHA-256 over everything :func:`pixels_equal` compares; decodes every frame.

    Raises ``InvalidImage`` / ``ImageTooLarge`` like
    :func:`images.compression.probe` for data that cannot be decoded.
    """
    digest = hashlib.sha256()
    with opened(data, limits) as image:
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
        # The one image decoded twice on purpose: the second pass reads the
        # low bytes of the same samples.
        digest.update(b"16-bit")
        with opened(data, limits) as image:
            for frame in _frames(image, limits.max_frames, rawmode=low_bytes):
                _hash_pixels(digest.update, frame)
    return digest.digest()


def check_decodes(data: bytes, limits: Limits) -> None:
    """Decode every frame, as the check an upload must pass (API.md §2); keep nothing.

    Raises what :func:`fingerprint` raises. A single-picture JPEG is decoded
    at 1/8 scale (libjpeg's DCT scaling): every entropy-coded coefficient is
    still read, which is what a truncated or corrupt stream breaks, while the
    inverse transform runs on the DC coefficients alone. For
    ``sklearn__china.jpg`` that is 1.4 ms of CPU against 2.2 ms for a full
    decode and 3.3 ms for a :func:`fingerprint` (measured in-process). A
    multi-picture file is decoded in full (Pillow's MPO frames do not take a
    draft after the first).
    """
    with opened(data, limits) as image:
        scaled = image.format == "JPEG"
        for _ in _frames(image, limits.max_frames, scaled=scaled):
            pass


def _frames(
    image: ImageFile.ImageFile,
    max_frames: int,
    rawmode: str | None = None,
    *,
    scaled: bool = False,
) -> Iterator[ImageFile.ImageFile]:
    """Decode each frame in turn and yield ``image`` positioned on it (one frame in memory).

    ``rawmode`` replaces the raw mode Pillow would unpack samples with;
    ``scaled`` decodes a JPEG at 1/8 scale (see :func:`check_decodes`).
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
        if scaled:
            image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
        image.load()
        yield image


def _hash_pixels(update: Callable[[bytes], object], frame: Image.Image) -> None:
    width, height = frame.size
    rows = max(1, _HASH_STRIP_PIXELS // max(width, 1))
    for top in range(0, height, rows):
        update(frame.crop((0, top, width, min(height, top + rows))).tobytes())
