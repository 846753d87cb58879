"""What archiving JPEGs as JPEG XL (API.md §12) saves at rest, and what it costs.

Usage: python bench/compact.py [DIR] [--repeat N] [--threads] [--memory]

DIR defaults to IMAGE_CORPUS, else ../shared/corpus, else testdata/. Per image: received
bytes; what is stored today (``compress(data)``: mozjpeg for a JPEG, oxipng
for a PNG) and its ratio; the compacted form (``jpeg_compact``) and its
ratio; CPU milliseconds of libjxl's encoder alone, of the whole
``jpeg_compact`` call (encoding, the verifying rebuild, two sha256) and of
``jpeg_restore`` (what a download pays). Totals: Σ at rest / Σ received over
the JPEGs, and over every image when the JPEGs are compacted and the rest
stored as today. CPU is ``time.process_time`` (every thread of this
process; libjxl runs in it), the mean of ``--repeat`` runs after a warm-up.

``--threads``: CPU and wall time of libjxl's encoder at 1 and 2 threads, per
JPEG and for generated 20 MP photo-like JPEGs. ``--memory``: peak RSS
(VmHWM) of a child process archiving one generated JPEG of 10 to 40 MP with
no pixel cap, and one at the cap near the largest accepted byte size; "MB
before" is the child's peak once it has imported the codec and read the file.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import imagecodecs
import numpy as np
from PIL import Image, ImageFile

# Replace bench/ on sys.path: its http.py would shadow the standard library.
ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)

from bench.support import CORPUS, cpu_ms, images_in  # noqa: E402 - needs the repository root
from images.compression import compress  # noqa: E402
from images.compression.jxl import MAX_PIXELS, jpeg_compact, jpeg_restore  # noqa: E402

JPEG_SUFFIXES = {".jpg", ".jpeg", ".mpo"}
MB = 1_000_000

# Run in a child, so that its VmHWM is this compaction's alone (plus the interpreter).
_CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
from images.compression.jxl import jpeg_compact
def peak():
    status = open("/proc/self/status").read().split("\\n")
    return int(next(line for line in status if line.startswith("VmHWM")).split()[1]) // 1024
data = open(sys.argv[2], "rb").read()
before = peak()
compacted = jpeg_compact(data, max_pixels=10**10)
print(before, peak(), "-" if compacted is None else len(compacted.data))
"""


def cpu_and_wall_ms(work: Callable[[], object], repeat: int) -> tuple[float, float]:
    work()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(repeat):
        work()
    return (
        (time.process_time() - cpu) * 1000 / repeat,
        (time.perf_counter() - wall) * 1000 / repeat,
    )


def bench(paths: list[Path], repeat: int) -> None:
    print(
        f"{'file':34} {'received':>9} {'today':>9} {'ratio':>6} {'at rest':>9} {'ratio':>6} "
        f"{'form':9} {'enc ms':>7} {'arch ms':>7} {'rebuild':>7}"
    )
    jpeg_in = jpeg_today = jpeg_rest = all_in = all_today = all_rest = 0
    cpu_totals = [0.0, 0.0, 0.0]  # encode, compact, rebuild
    for path in paths:
        data = path.read_bytes()
        today = len(compress(data).data)
        compacted = jpeg_compact(data)
        rest = today if compacted is None else len(compacted.data)
        all_in, all_today, all_rest = all_in + len(data), all_today + today, all_rest + rest
        figures = f"{'-':9} {'':>7} {'':>7} {'':>7}"
        if path.suffix.lower() in JPEG_SUFFIXES:
            jpeg_in, jpeg_today, jpeg_rest = (
                jpeg_in + len(data),
                jpeg_today + today,
                jpeg_rest + rest,
            )
        if compacted is not None:
            assert jpeg_restore(compacted.data, compacted.form) == data
            times = (
                cpu_ms(lambda data=data: imagecodecs.jpegxl_encode_jpeg(data), repeat),
                cpu_ms(lambda data=data: jpeg_compact(data), repeat),
                cpu_ms(lambda a=compacted: jpeg_restore(a.data, a.form), repeat),
            )
            cpu_totals = [total + each for total, each in zip(cpu_totals, times, strict=True)]
            figures = f"{compacted.form:9} " + " ".join(f"{each:7.1f}" for each in times)
        print(
            f"{path.name[:34]:34} {len(data):9,} {today:9,} {today / len(data):6.3f} "
            f"{rest:9,} {rest / len(data):6.3f} {figures}".rstrip()
        )
    if jpeg_in:
        print(
            f"\nJPEGs: {jpeg_in:,} bytes received; today {jpeg_today / jpeg_in:.4f}, "
            f"compacted {jpeg_rest / jpeg_in:.4f} (Σ at rest / Σ received)"
        )
        print(
            "CPU per MB of JPEG: encode {:.0f} ms, compact (encode + verify) {:.0f} ms, "
            "rebuild {:.0f} ms".format(*(total * MB / jpeg_in for total in cpu_totals))
        )
    print(
        f"All {len(paths)} images: {all_in:,} bytes received; today {all_today / all_in:.4f}, "
        f"JPEGs compacted and the rest as today {all_rest / all_in:.4f}"
    )


def photo_jpeg(path: Path, megapixels: float, subsampling: int, noise: int, quality: int) -> None:
    """A 4:3 JPEG (Pillow) of smooth gradients plus uniform noise of ``noise`` levels."""
    width = int((megapixels * MB * 4 / 3) ** 0.5) // 16 * 16
    height = int(megapixels * MB / width) // 16 * 16
    rng = np.random.default_rng(1)
    x = np.arange(width, dtype=np.uint32)[None, :] * (255 - noise) // width
    y = np.arange(height, dtype=np.uint32)[:, None] * (255 - noise) // height
    pixels = np.empty((height, width, 3), np.uint8)
    for channel in range(3):
        ramp = (x * (channel + 1) + y * (3 - channel)) // 4
        pixels[..., channel] = ramp + rng.integers(0, noise, (height, width), dtype=np.uint32)
    ImageFile.MAXBLOCK = max(ImageFile.MAXBLOCK, width * height * 3)
    Image.fromarray(pixels).save(path, "JPEG", quality=quality, subsampling=subsampling)


def bench_threads(paths: list[Path], repeat: int) -> None:
    print("\nlibjxl encoder, CPU / wall ms per image at 1 and 2 threads")
    with tempfile.TemporaryDirectory() as scratch:
        files = [
            (path.name, path.read_bytes()) for path in paths if path.suffix.lower() in JPEG_SUFFIXES
        ]
        for subsampling, name in ((2, "20 MP 4:2:0 q90"), (0, "20 MP 4:4:4 q90")):
            generated = Path(scratch) / "photo.jpg"
            photo_jpeg(generated, 20, subsampling, 24, 90)
            files.append((name, generated.read_bytes()))
        print(f"{'file':32} {'1 thread':>17} {'2 threads':>17}")
        for name, data in files:
            figures = [
                cpu_and_wall_ms(
                    lambda data=data, threads=threads: imagecodecs.jpegxl_encode_jpeg(
                        data, numthreads=threads
                    ),
                    repeat,
                )
                for threads in (1, 2)
            ]
            print(
                f"{name[:32]:32} " + " ".join(f"{cpu:8.0f}/{wall:<8.0f}" for cpu, wall in figures)
            )


def bench_memory() -> None:
    print(f"\npeak RSS of a child archiving one JPEG (no pixel cap; MAX_PIXELS = {MAX_PIXELS:,})")
    print(f"{'JPEG':26} {'pixels':>11} {'bytes':>11} {'at rest':>11} {'MB before':>9} {'peak':>5}")
    cases = [
        (f"{mp} MP 4:{'2:0' if sub == 2 else '4:4'} q90", mp, sub, 24, 90)
        for mp in (10, 20, 40)
        for sub in (2, 0)
    ]
    cases.append(("10 MP 4:4:4 q100 noise", 10, 0, 255, 100))
    # The worst picture under the cap: 4:4:4 noise near the 50 MB byte limit.
    cases.append((f"{MAX_PIXELS / MB:.0f} MP 4:4:4 q95 noise", MAX_PIXELS / MB, 0, 255, 95))
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "photo.jpg"
        for name, megapixels, subsampling, noise, quality in cases:
            photo_jpeg(path, megapixels, subsampling, noise, quality)
            with Image.open(path) as image:
                pixels = image.width * image.height
            child = subprocess.run(
                [sys.executable, "-c", _CHILD, str(ROOT), str(path)],
                capture_output=True,
                text=True,
                check=True,
            )
            before, peak, rest = child.stdout.split()
            rest = rest if rest == "-" else f"{int(rest):,}"
            print(
                f"{name:26} {pixels:11,} {path.stat().st_size:11,} {rest:>11} {before:>9} {peak:>5}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, nargs="?", default=CORPUS)
    parser.add_argument("--repeat", type=int, default=3, help="runs averaged per figure")
    parser.add_argument("--threads", action="store_true", help="also time 1 and 2 encoder threads")
    parser.add_argument("--memory", action="store_true", help="also measure peak RSS")
    arguments = parser.parse_args()
    paths = images_in(arguments.directory)
    print(f"{arguments.directory}: {len(paths)} images; {imagecodecs.jpegxl_version()}\n")
    bench(paths, arguments.repeat)
    if arguments.threads:
        bench_threads(paths, arguments.repeat)
    if arguments.memory:
        bench_memory()


if __name__ == "__main__":
    main()
