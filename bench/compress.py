"""Compress every image in a directory and print what storing it costs, at each effort.

Usage: python bench/compress.py DIR [--png-settings [--focus FILE]] [--jpeg-child] [--repeat N]

Per file: format, received bytes, then for the full and the quick effort
(``compress(data)`` and ``compress(data, effort=QUICK)``) the stored / received
ratio and the CPU time of the whole call (probe, reference decode, optimizer,
verifying decode), mozjpeg's child process included; whether the stored
image decodes to the same pixels and whether ICC and EXIF survived.
``--png-settings`` times oxipng alone at the settings that were weighed for
the efforts (how :mod:`images.compression.png` chose them), over the PNGs
and over the JPEGs decoded to PNG, and for one file alone; ``--jpeg-child``
what mozjpeg costs in-process, in a child started per image (as it used to
run) and in the long-lived child.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import mozjpeg_lossless_optimization
import oxipng
from PIL import Image

# Replace bench/ on sys.path: its http.py would shadow the standard library.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench import support  # noqa: E402 - needs the repository root on sys.path
from bench.support import images_in, process_cpu  # noqa: E402
from images import compression  # noqa: E402
from images.compression import mozjpeg, png  # noqa: E402


def _setting(filters: tuple[str, ...], effort: int) -> dict[str, object]:
    return {
        **png.LOSSLESS,
        "filter": tuple(getattr(oxipng.RowFilter, name) for name in filters),
        "deflate": oxipng.Deflaters.libdeflater(effort),
    }


# What was weighed for png.FULL and png.QUICK. Without "filter" and "deflate",
# "level" picks oxipng's preset: level 2 was the only effort before QUICK.
PNG_SETTINGS: dict[str, dict[str, object]] = {
    "level 0 (CHECK)": png.CHECK,
    "level 1": {**png.LOSSLESS, "level": 1},
    "level 2 (was FULL)": {**png.LOSSLESS, "level": 2},
    "level 3": {**png.LOSSLESS, "level": 3},
    "None+MinSum, 11 (FULL)": png.FULL,
    "None+Entropy, 11": _setting(("NoOp", "Entropy"), 11),
    "None+Up+MinSum, 11": _setting(("NoOp", "Up", "MinSum"), 11),
    "None+MinSum, 10": _setting(("NoOp", "MinSum"), 10),
    "MinSum, 11": _setting(("MinSum",), 11),
    "MinSum, 10 (QUICK)": png.QUICK,
    "Entropy, 10": _setting(("Entropy",), 10),
    "Paeth, 11": _setting(("Paeth",), 11),
    "Brute, 11": _setting(("Brute",), 11),
}


def cpu_seconds() -> float:
    """CPU time of this process (every thread), its reaped children and the idle mozjpeg children.

    A live child's time comes from /proc in clock ticks (10 ms), so figures
    are averaged over ``--repeat`` runs.
    """
    live = sum(process_cpu(pid) for pid in mozjpeg.child_pids())
    return time.process_time() + support.children_cpu() + live


def cpu_ms(work: Callable[[], object], repeat: int) -> float:
    """Mean CPU milliseconds of ``work`` after one warm-up call (which starts mozjpeg's child)."""
    return support.cpu_ms(work, repeat, clock=cpu_seconds)


def metadata(data: bytes) -> dict[str, bytes]:
    with Image.open(io.BytesIO(data)) as image:
        return {key: image.info[key] for key in ("icc_profile", "exif") if image.info.get(key)}


def metadata_kept(before: bytes, after: bytes) -> str:
    original = metadata(before)
    if not original:
        return "-"
    return "yes" if metadata(after) == original else "NO"


def bench(paths: list[Path], repeat: int) -> None:
    print(
        f"{'file':36} {'format':6} {'original':>9} {'full':>6} {'ms':>6} {'quick':>6} {'ms':>6} "
        f"{'pixels':>6} {'icc/exif':>8}  method"
    )
    total_in = identical = 0
    total_out = {"full": 0, "quick": 0}
    total_ms = {"full": 0.0, "quick": 0.0}
    for path in paths:
        data = path.read_bytes()
        row, same, kept, methods = [], [], [], []
        for effort, quick in (("full", False), ("quick", True)):
            result = compression.compress(
                data, effort=compression.QUICK if quick else compression.FULL
            )
            same.append(compression.pixels_equal(data, result.data))
            kept.append(metadata_kept(data, result.data))
            methods.append(result.method)
            millis = cpu_ms(
                partial(
                    compression.compress,
                    data,
                    effort=compression.QUICK if quick else compression.FULL,
                ),
                repeat,
            )
            total_out[effort] += len(result.data)
            total_ms[effort] += millis
            row.append(f"{len(result.data) / len(data):6.3f} {millis:6.1f}")
        total_in += len(data)
        identical += all(same)
        print(
            f"{path.name[:36]:36} {compression.probe(data).format:6} {len(data):9,} {row[0]} "
            f"{row[1]} {'yes' if all(same) else 'NO':>6} {'NO' if 'NO' in kept else kept[0]:>8}  "
            f"{'/'.join(dict.fromkeys(methods))}"
        )
    print(
        f"\npixel-identical at both efforts {identical}/{len(paths)}; received {total_in:,} bytes"
    )
    for effort in ("full", "quick"):
        print(
            f"{effort:5}: stored {total_out[effort]:,} bytes = {total_out[effort] / total_in:.4f}; "
            f"CPU {total_ms[effort] / 1000:.2f} s"
        )


def photos_as_png(paths: list[Path]) -> list[tuple[str, bytes]]:
    """The JPEGs decoded and saved as PNG by Pillow, in colour (zlib 9) and grey (zlib 6).

    More camera images for weighing PNG settings than the corpus PNGs, most
    of which are scientific images or drawings.
    """
    pngs = []
    for path in paths:
        if path.suffix.lower() in (".jpg", ".jpeg"):
            with Image.open(path) as image:
                for mode, level in (("RGB", 9), ("L", 6)):
                    out = io.BytesIO()
                    image.convert(mode).save(out, "PNG", compress_level=level)
                    pngs.append((f"{path.stem}-{mode}.png", out.getvalue()))
    return pngs


def bench_png_settings(paths: list[Path], repeat: int, focus: str) -> None:
    sets = {
        "corpus PNGs": [
            (path.name, path.read_bytes()) for path in paths if path.suffix.lower() == ".png"
        ],
        "JPEGs as PNG": photos_as_png(paths),
    }
    print("\noxipng alone (reductions off): CPU ms and stored / received")
    print(f"{'setting':24} {focus[:22]:>22} " + " ".join(f"{name:>22}" for name in sets))
    for name, options in PNG_SETTINGS.items():
        figures = []
        focused = "-"
        for files in sets.values():
            total_in = total_out = 0
            total_ms = 0.0
            for file_name, data in files:
                stored = min(len(oxipng.optimize_from_memory(data, **options)), len(data))
                millis = cpu_ms(partial(oxipng.optimize_from_memory, data, **options), repeat)
                total_in += len(data)
                total_out += stored
                total_ms += millis
                if file_name == focus:
                    focused = f"{millis:6.1f} ms {stored / len(data):.4f}"
            figures.append(f"{total_ms:7.0f} ms {total_out / total_in:.4f}")
        print(f"{name:24} {focused:>22} " + " ".join(f"{figure:>22}" for figure in figures))


def _child_per_image(data: bytes) -> bytes:
    """How mozjpeg used to run: a new child interpreter for one image."""
    script = Path(mozjpeg.__file__).with_name("mozjpeg_child.py")
    request = len(data).to_bytes(8, "big") + data
    child = subprocess.run(
        [sys.executable, "-P", str(script)], input=request, capture_output=True, check=True
    )
    return child.stdout[8:]


def bench_jpeg_child(paths: list[Path], repeat: int) -> None:
    jpegs = [
        (path.name, path.read_bytes()) for path in paths if path.suffix.lower() in (".jpg", ".jpeg")
    ]
    print("\nmozjpeg, CPU ms per image (children included)")
    print(f"{'file':36} {'in-process':>10} {'new child':>10} {'kept child':>10} {'compress()':>10}")
    for name, data in jpegs:
        in_process = partial(
            mozjpeg_lossless_optimization.optimize,
            data,
            copy=mozjpeg_lossless_optimization.COPY_MARKERS.ALL,
        )
        work = (
            in_process,
            partial(_child_per_image, data),
            partial(mozjpeg.optimize, data),
            partial(compression.compress, data),
        )
        figures = [cpu_ms(each, repeat) for each in work]
        print(f"{name[:36]:36} " + " ".join(f"{ms:10.1f}" for ms in figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--png-settings", action="store_true", help="also time oxipng settings")
    parser.add_argument("--jpeg-child", action="store_true", help="also time mozjpeg's child")
    parser.add_argument("--repeat", type=int, default=5, help="runs averaged per figure")
    parser.add_argument(
        "--focus", default="skimage__brick.png", help="file shown alone by --png-settings"
    )
    arguments = parser.parse_args()
    paths = images_in(arguments.directory)
    bench(paths, arguments.repeat)
    if arguments.png_settings:
        bench_png_settings(paths, arguments.repeat, arguments.focus)
    if arguments.jpeg_child:
        bench_jpeg_child(paths, arguments.repeat)


if __name__ == "__main__":
    main()
