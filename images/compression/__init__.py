"""Lossless image compression: bytes in, bytes out (API.md §2, §9 "Lossless", "Limits").

Pure code: no Django, DRF or aiocoap. Every failure caused by the input is one
of the typed errors of :mod:`images.errors` (``InvalidImage`` or
``ImageTooLarge``); nothing else escapes for bad input.

What is stored, by received format:

- PNG (and APNG): oxipng with every reduction off, so colour type, bit depth,
  palette and metadata chunks stay as received (:mod:`.png`).
- JPEG: mozjpeg's lossless optimization (Huffman tables, progressive scans)
  of the unchanged DCT coefficients, copying every marker (ICC, EXIF, XMP),
  in a child process because it can exit() on corrupt input (:mod:`.mozjpeg`).
  A multi-picture file (MPO) or one with bytes after its EOI is kept as is,
  because the optimizer would drop everything after the first picture
  (:mod:`.jpeg`).
- BMP and uncompressed single-page TIFF in a mode PNG can hold: PNG.
- GIF and WebP: as received. The stack has no re-encoder for them that is
  known to be lossless for every frame, disposal and blend, so we do not try.

Whatever an optimizer produces is decoded again and must match the received
image frame by frame (:mod:`.verify`), and must be strictly smaller;
otherwise the received bytes are stored. So the stored image is never larger
than the received one. Probing and limits are in :mod:`.probing`.
"""

from __future__ import annotations

from dataclasses import dataclass

import oxipng

from images import sources
from images.compression import mozjpeg, png
from images.compression.jpeg import jpeg_length
from images.compression.jxl import Compacted, compactable, jpeg_compact
from images.compression.pngcheck import deflated_at_maximum, png_data_complete
from images.compression.probing import ImageInfo, Limits, decoded_bytes, probe
from images.compression.verify import check_decodes, fingerprint, pixels_equal
from images.errors import DomainError

__all__ = [
    "CHECK",
    "FULL",
    "QUICK",
    "Compacted",
    "Compressed",
    "ImageInfo",
    "Limits",
    "compact",
    "compress",
    "extension_for",
    "pixels_equal",
    "probe",
    "stored_form",
    "StoredForm",
]


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


_DEFAULT_LIMITS = Limits()  # frozen, so one instance serves every call
_EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/gif": "gif",
    "image/webp": "webp",
    "image/bmp": "bmp",
    "image/tiff": "tiff",
}


# How hard to try (``effort=``): a check only, the background pass while it
# lags, or the best lossless result.
CHECK = "check"
QUICK = "quick"
FULL = "full"
_PNG_OPTIONS = {CHECK: png.CHECK, QUICK: png.QUICK, FULL: png.FULL}


@dataclass(frozen=True)
class StoredForm:
    """What to serve for an upload, and whether what is held may be compacted later (§12, §14)."""

    served: Compressed
    # The served bytes are final, and a denser form may be held in their
    # place in the background (:func:`compact`): a JPEG that libjxl takes.
    compact_later: bool
    # Why nothing smaller was tried ("": it was): an image over the decoded
    # size its caller bounds the work by, kept as received.
    kept: str = ""


def stored_form(
    data: sources.Source,
    limits: Limits = _DEFAULT_LIMITS,
    *,
    effort: str = FULL,
    compact: bool = False,
    checked: bool = False,
    max_decoded: int = 0,
) -> StoredForm:
    """The one policy of what to serve and hold for ``data``; ingest and the optimizer ask it.

    With ``compact``, a JPEG (or MPO) that JPEG XL can hold (judged from its
    frame header, :func:`images.compression.jxl.compactable`) is served as
    received, final at once, and ``compact_later``: what only makes storage
    smaller never holds up the answer (API.md §14). Anything else is
    optimized at ``effort``: CHECK (the request path when a background pass
    follows) checks the image and keeps it as received (BMP/TIFF become
    PNG); QUICK and FULL try a smaller lossless encoding (:func:`compress`).

    The image is probed once and decoded once (the check every frame must
    pass), twice when a candidate encoding is verified; ``checked`` says an
    earlier pass decoded it already, so a compactable JPEG is not decoded
    again.

    ``max_decoded`` (bytes; 0: no bound) bounds what QUICK and FULL try:
    an image whose pixels decode to more (:func:`.probing.decoded_bytes`)
    is only checked, as by CHECK (not at all when ``checked``), and kept as
    received, ``kept`` saying why. A pass costs about 93 ms of CPU per MB
    decoded (FULL: a 100 MP RGBA 16-bit PNG, 800 MB, took 25 s and 2.3 GiB),
    so the bound, checked from the header, caps both before any decoding.
    """
    info = probe(data, limits)
    if compact and info.format == "JPEG":
        whole = sources.read_all(data)
        if compactable(whole):
            if not checked:
                check_decodes(whole, limits)  # every frame decodes: the upload's check
            return StoredForm(_as_received(data, info), compact_later=True)
    kept = _over_bound(data, info, effort, max_decoded)
    if kept:
        served = _as_received(data, info) if checked else _compressed(data, info, limits, CHECK)
        return StoredForm(served, compact_later=False, kept=kept)
    return StoredForm(_compressed(data, info, limits, effort), compact_later=False)


def _over_bound(data: sources.Source, info: ImageInfo, effort: str, max_decoded: int) -> str:
    """Why ``data`` is over ``max_decoded`` bytes decoded, for an effort that tries; else ""."""
    if effort == CHECK or not max_decoded:
        return ""
    decoded = decoded_bytes(data, info)
    if decoded <= max_decoded:
        return ""
    return (
        f"kept as received: {info.width}x{info.height} pixels, {info.frames} frame(s),"
        f" {decoded:,} bytes decoded; the bound is {max_decoded:,}"
        " (IMAGES_OPTIMIZE_MAX_PIXEL_BYTES)"
    )


def compress(
    data: sources.Source,
    limits: Limits = _DEFAULT_LIMITS,
    *,
    effort: str = FULL,
) -> Compressed:
    """Return what to store for ``data``: a losslessly smaller encoding, or ``data`` itself.

    ``data`` may be a file (a spooled upload): it is read into memory unless
    it is a still PNG checked only (``effort=CHECK``), which is checked
    reading it in pieces.

    ``effort`` CHECK is for the request path when a background pass follows
    (IMAGES_OPTIMIZE=deferred): the image is checked as always (every frame
    decoded, or for a still PNG its encoding checked by
    :func:`images.compression.pngcheck.png_data_complete`), BMP/TIFF still
    become PNG (at oxipng's quickest level) so that the stored format never
    changes later, and PNG and JPEG optimization is left to the background.
    That keeps the request's CPU and memory to one decode at most.

    QUICK is for the background pass while it lags behind: PNG output
    gets one row filter and a lighter deflate (:data:`.png.QUICK`), and a
    PNG that zlib deflated at maximum, its rows filtered, is kept as
    received (what QUICK gains on one is a few per cent); JPEG is
    optimized as always (mozjpeg-lossless-optimization offers no cheaper
    setting). Measured
    with ``bench/compress.py`` over ../shared/corpus (CPU time of the whole
    call, mozjpeg's child included; stored / received bytes):

    ===================  =================  ===============  ===============
    effort               23 corpus files    brick.png        china.jpg
    ===================  =================  ===============  ===============
    full until now       1.84 s  0.8797     78 ms  0.967     73 ms  0.943
    full                 1.31 s  0.8810     55 ms  0.967     41 ms  0.943
    quick                0.92 s  0.8843     32 ms  0.967     40 ms  0.943
    ===================  =================  ===============  ===============

    FULL, the default, is inline mode and the background pass otherwise.

    The stored bytes decode (with Pillow) to the same size, mode, bit depth,
    palette, transparency and pixels in every frame, with the same frame
    durations; ICC, EXIF and text metadata are kept; ``len(result.data) <=
    len(data)``. Raises what :func:`probe` raises, and ``InvalidImage`` when
    any frame cannot be fully decoded (truncated or corrupt data).
    """
    return _compressed(data, probe(data, limits), limits, effort)


def _as_received(data: sources.Source, info: ImageInfo) -> Compressed:
    return Compressed(
        data=data,
        content_type=info.content_type,
        width=info.width,
        height=info.height,
        original_size=sources.size(data),
        frames=info.frames,
        method="original",
    )


def _compressed(data: sources.Source, info: ImageInfo, limits: Limits, effort: str) -> Compressed:
    """:func:`compress` of a probed image."""
    if effort == CHECK and info.format == "PNG" and png_data_complete(data):
        # Nothing to try for a PNG that is only checked, so no reference
        # decode: checking the encoding is enough, in bounded memory.
        return _as_received(data, info)
    data = sources.read_all(data)
    if effort == QUICK and info.format == "PNG" and deflated_at_maximum(data):
        # What QUICK would gain here is a few per cent for its whole cost
        # (.png's table): kept as received, as when shed, the CPU left for
        # images that gain more, or for FULL once the backlog is short.
        return _as_received(data, info)
    # Decoding every frame validates the input and is the reference the
    # candidate must match.
    reference = fingerprint(data, limits)
    stored, content_type, method = data, info.content_type, "original"
    candidate = _optimized(data, info, limits, effort)
    if candidate is not None and len(candidate[0]) < len(data):
        try:
            if fingerprint(candidate[0], limits) == reference:
                stored, content_type, method = candidate
        except DomainError:
            pass  # an optimizer produced something undecodable: keep the original
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


def _optimized(
    data: bytes, info: ImageInfo, limits: Limits, effort: str
) -> tuple[bytes, str, str] | None:
    """An unverified candidate (bytes, content type, method) for ``data``, or None."""
    options = _PNG_OPTIONS[effort]
    try:
        if info.format in ("BMP", "TIFF") and info.frames == 1:
            candidate = png.converted(data, limits, options)
            return None if candidate is None else (candidate, "image/png", "converted-png")
        if effort == CHECK:
            return None  # PNG and JPEG are left to the background pass
        if info.format == "PNG":
            candidate = png.optimize(data, options)
            return None if candidate is None else (candidate, "image/png", "oxipng")
        if info.format == "JPEG" and info.frames == 1 and jpeg_length(data) == len(data):
            candidate = mozjpeg.optimize(data)
            return None if candidate is None else (candidate, "image/jpeg", "mozjpeg")
    except (oxipng.PngError, DomainError):
        pass  # an optimizer or Pillow refused this input: the original is stored
    return None


def compact(data: bytes, content_type: str) -> Compacted | None:
    """A denser form to hold at rest from which ``data`` is rebuilt bit for bit, or ``None``.

    JPEG (and MPO) only: JPEG XL with JPEG reconstruction data
    (:func:`images.compression.jxl.jpeg_compact`, which rebuilds and compares
    the sha256 before answering). ``None`` for other formats, for what the
    encoder refuses, and when it would not be smaller.
    """
    if content_type != "image/jpeg":
        return None
    return jpeg_compact(data)
