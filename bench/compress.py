"""Compress every image in a directory and print what storing it would cost.

Usage: python bench/compress.py DIR [--png-levels]

Per file: format, received and stored bytes, ratio, whether the stored image
decodes to the same pixels, whether ICC and EXIF survived, and the time
``compress`` took. ``--png-levels`` also times oxipng at each level (with the
module's lossless options) over the PNGs, which is how the level was chosen.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import oxipng
from PIL import Image

# Replace bench/ on sys.path: its http.py would shadow the standard library.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from images import compression  # noqa: E402 - needs the repository root on sys.path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff"}


def metadata(data: bytes) -> dict[str, bytes]:
    with Image.open(io.BytesIO(data)) as image:
        return {key: image.info[key] for key in ("icc_profile", "exif") if image.info.get(key)}


def metadata_kept(before: bytes, after: bytes) -> str:
    original = metadata(before)
    if not original:
        return "-"
    return "yes" if metadata(after) == original else "NO"


def bench(paths: list[Path]) -> None:
    print(
        f"{'file':36} {'format':6} {'original':>9} {'stored':>9} {'ratio':>6} "
        f"{'pixels':>6} {'icc/exif':>8} {'ms':>7}  method"
    )
    total_in = total_out = identical = 0
    total_seconds = 0.0
    for path in paths:
        data = path.read_bytes()
        started = time.perf_counter()
        result = compression.compress(data)
        seconds = time.perf_counter() - started
        same = compression.pixels_equal(data, result.data)
        total_in += len(data)
        total_out += len(result.data)
        identical += same
        total_seconds += seconds
        print(
            f"{path.name[:36]:36} {compression.probe(data).format:6} {len(data):9,} "
            f"{len(result.data):9,} {len(result.data) / len(data):6.3f} "
            f"{'yes' if same else 'NO':>6} {metadata_kept(data, result.data):>8} "
            f"{seconds * 1000:7.1f}  {result.method}"
        )
    print(
        f"\ntotal: {total_out:,} / {total_in:,} bytes = {total_out / total_in:.4f}; "
        f"pixel-identical {identical}/{len(paths)}; {total_seconds:.2f} s"
    )


def bench_png_levels(paths: list[Path]) -> None:
    pngs = [(path.name, path.read_bytes()) for path in paths if path.suffix.lower() == ".png"]
    levels = range(7)
    millis: dict[str, list[float]] = {name: [] for name, _ in pngs}
    ratios = []
    for level in levels:
        options = {**compression._OXIPNG_OPTIONS, "level": level}  # the module's, level changed
        total_in = total_out = 0
        for name, data in pngs:
            started = time.perf_counter()
            stored = oxipng.optimize_from_memory(data, **options)
            millis[name].append((time.perf_counter() - started) * 1000)
            total_in += len(data)
            total_out += min(len(stored), len(data))
        ratios.append(total_out / total_in)
    print(
        f"\noxipng, reductions off: ms per file at each level (current: "
        f"{compression._OXIPNG_OPTIONS['level']})"
    )
    print(f"{'file':36} " + " ".join(f"{'level ' + str(level):>8}" for level in levels))
    for name, row in millis.items():
        print(f"{name[:36]:36} " + " ".join(f"{ms:8.0f}" for ms in row))
    totals = [sum(row[level] for row in millis.values()) for level in levels]
    print(f"{'total ms':36} " + " ".join(f"{ms:8.0f}" for ms in totals))
    print(f"{'stored / original':36} " + " ".join(f"{ratio:8.4f}" for ratio in ratios))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--png-levels", action="store_true", help="also time oxipng levels 0-6")
    arguments = parser.parse_args()
    paths = sorted(
        path for path in arguments.directory.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES
    )
    bench(paths)
    if arguments.png_levels:
        bench_png_levels(paths)


if __name__ == "__main__":
    main()
