"""PNG output: oxipng's lossless recompression, and BMP or uncompressed TIFF converted to PNG.

Every oxipng reduction is off and no chunk is stripped: API.md §9 forbids
changing colour type, bit depth or palette, and wants ICC, EXIF and text
kept. What is left to choose is which row filters oxipng tries and how hard
it deflates, per effort: :data:`CHECK`, :data:`QUICK`, :data:`FULL`.

Chosen by measurement (``bench/compress.py ../shared/corpus --png-settings``:
CPU time of ``optimize_from_memory`` alone, every oxipng thread counted, and
stored / received bytes; "10", "11" are libdeflater's effort):

==============================  ===============  ==============  ===============
setting                         brick.png        17 corpus PNGs  12 JPEGs as PNG
==============================  ===============  ==============  ===============
level 2 (FULL until now)        70 ms  0.9670    1.21 s  0.8543  3.67 s  0.9592
None + MinSum, 11 (FULL)        50 ms  0.9671    0.90 s  0.8560  2.87 s  0.9569
None + Entropy, 11              52 ms  0.9670    0.96 s  0.8556  2.99 s  0.9594
None + MinSum, 10               41 ms  0.9671    0.66 s  0.8585  2.33 s  0.9584
MinSum, 11                      35 ms  0.9671    0.77 s  0.8582  2.44 s  0.9569
MinSum, 10 (QUICK)              28 ms  0.9671    0.50 s  0.8607  1.77 s  0.9584
level 1 (Bigrams, 10)           33 ms  0.9703    0.59 s  0.8596  1.88 s  0.9703
level 0 (Bigrams, 5; CHECK)     12 ms  0.9999    0.23 s  0.8851  0.42 s  0.9998
==============================  ===============  ==============  ===============

Only the near-optimal parser (efforts 10 to 12) beats a file zlib wrote at
level 9, such as brick.png: at 8 or 9 it stays as received whatever the
filter, and 12 costs half as much again as 11 for 0.1 %. Of the filters,
MinSum and Entropy suit camera images best and trade wins file by file;
MinSum is a little cheaper, and better on the JPEGs decoded to PNG. Level 2 also tried Sub and
Bigrams, which bought 0.2 % of the corpus PNG bytes for a third more CPU.
Drawings and logos with flat areas want no filter at all (logo2.png: 0.72
unfiltered, 0.94 with MinSum), so FULL lets oxipng judge None too (with
several filters it judges each at effort 7, then deflates the best at 11);
QUICK saves that judging, 30 % of its CPU for a camera image.

QUICK tries nothing on a PNG that says zlib deflated it at maximum (FLEVEL
3) with its rows filtered (:func:`.pngcheck.deflated_at_maximum`, 0.02 to
0.4 ms): it is kept as received, as an image shed past the lag bound is,
and its CPU goes to images that gain more, or to FULL once the backlog is
short. Measured on the 17 corpus PNGs (QUICK's stored / received, CPU):

==============================  ========================================
the five such files             logo2 0.940 27 ms, brick 0.967 39 ms,
                                camera 0.998 32 ms, grass 0.984 13 ms,
                                chessboard_RGB 1.000 11 ms
the twelve others (mean)        0.887, 50 ms; moon.png (level 9, no row
                                filtered) 0.830
==============================  ========================================

So a sixth of QUICK's CPU on the corpus (122 of 722 ms) bought 0.25 % of its PNG
bytes.

No ``timeout``: oxipng's is wall time, and it only stops trying further
filters. FULL's two are judged at once, then the best is deflated whatever
the clock says, and nothing bounds memory: a 100 MP RGBA 16-bit PNG with
``timeout=2`` still took 16 s of CPU and 2.3 GiB (25 s without); and on a
24 MP photo ``timeout=1`` returned 41.10 MB where ``timeout=2`` returned
39.34 MB, so the result would follow the machine's load. What a pass may
cost is bounded instead by the pixels' decoded size, before it starts
(``max_decoded`` of :func:`images.compression.stored_form`).
"""

from __future__ import annotations

import io

import oxipng

from images.compression.probing import Limits, opened

# What every effort shares: nothing in the image may change but its encoding.
LOSSLESS = {
    "interlace": None,  # keep the received interlacing
    "bit_depth_reduction": False,
    "color_type_reduction": False,
    "palette_reduction": False,
    "grayscale_reduction": False,
    "scale_16": False,
    "optimize_alpha": False,
    "strip": oxipng.StripChunks.none(),
}
# The request path (effort CHECK) converting BMP/TIFF: oxipng's quickest level.
CHECK = {**LOSSLESS, "level": 0}
# The background optimizer while its backlog lags (effort QUICK).
QUICK = {
    **LOSSLESS,
    "filter": (oxipng.RowFilter.MinSum,),
    "deflate": oxipng.Deflaters.libdeflater(10),
}
# The background optimizer otherwise, and inline mode. oxipng judges each
# filter with a quick deflate (libdeflater 7) and compresses the best once.
FULL = {
    **LOSSLESS,
    "filter": (oxipng.RowFilter.NoOp, oxipng.RowFilter.MinSum),
    "deflate": oxipng.Deflaters.libdeflater(11),
}

# Modes Pillow reads back from a PNG unchanged: the targets of BMP/TIFF conversion.
_PNG_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "I;16"})


def optimize(data: bytes, options: dict[str, object]) -> bytes | None:
    """oxipng's recompression of the PNG ``data`` with ``options``; None if it changed the header.

    Raises ``oxipng.PngError`` when oxipng cannot read ``data``.
    """
    candidate = oxipng.optimize_from_memory(data, **options)
    # With reductions off oxipng keeps the IHDR; a changed one means a
    # changed bit depth or colour type, which a Pillow decode can miss.
    return candidate if candidate[:33] == data[:33] else None


def converted(data: bytes, limits: Limits, options: dict[str, object]) -> bytes | None:
    """oxipng's PNG of a BMP or uncompressed TIFF, keeping ICC and resolution; None if unsuitable.

    Raises ``InvalidImage`` / ``ImageTooLarge`` when ``data`` cannot be
    decoded, and ``oxipng.PngError`` when oxipng fails.
    """
    with opened(data, limits) as image:
        # Compressed TIFFs (LZW, Deflate, JPEG...) are often already small and
        # may carry tags PNG cannot; only raw TIFF is worth converting.
        if image.format == "TIFF" and image.info.get("compression") != "raw":
            return None
        if image.mode not in _PNG_MODES:
            return None  # CMYK, F, I, I;16B...: PNG cannot hold them unchanged
        image.load()
        out = io.BytesIO()
        kept = {key: image.info[key] for key in ("icc_profile", "dpi") if image.info.get(key)}
        # oxipng filters and deflates the rows anew, so at QUICK and FULL
        # Pillow need not compress them: level 0 only frames the rows. The
        # request path (CHECK) keeps level 1, which oxipng's level 0 does not
        # always beat.
        image.save(out, "PNG", compress_level=1 if options is CHECK else 0, **kept)
    return oxipng.optimize_from_memory(out.getvalue(), **options)
