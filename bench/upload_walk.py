"""Count the image work behind one upload: at the request, then in the background pass.

Usage: python bench/upload_walk.py

For each case (testdata/sklearn__china.jpg and testdata/skimage__brick.png, the README's
two images, and that JPEG in CMYK, which JPEG XL refuses) and each setting that changes
the walk (IMAGES_OPTIMIZE=inline or deferred; for the JPEG also JPEG XL at rest on or
off), a child process of this script starts Django on a throwaway SQLite database,
uploads the image once as a raw body (``POST /collections/images?deviceId=walk&...``,
Django's test client), then runs ``manage.py optimize`` once (no flags: it drains the
backlog and exits), and counts for each phase:

- probes: calls of ``PIL.Image.open`` (each is a parse of the image's headers);
- decodes: calls of ``PIL.ImageFile.ImageFile.load`` that find ``self.tile`` non-empty,
  that is, that decode pixel data; a later ``load()`` of the same frame is a no-op and
  not counted, and each frame of a multi-frame image counts once (one row per frame);
- oxipng: calls of ``oxipng.optimize_from_memory``;
- mozjpeg: calls of ``optimize`` in ``images.compression.mozjpeg``. The one patch of
  our own code: mozjpeg runs in a child process, so the library call cannot be seen
  from here;
- jxl-enc, jxl-dec: calls of ``imagecodecs.jpegxl_encode_jpeg`` / ``jpegxl_decode_jpeg``.

Only library functions are patched otherwise. "status" is the upload's HTTP status; "note"
is the stored metadata it answered, and for the background pass the optimizer's report.
"""

from __future__ import annotations

import functools
import importlib
import io
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Replace bench/ on sys.path: its http.py would shadow the standard library.
sys.path[0] = str(ROOT)

JPEG = ROOT / "testdata" / "sklearn__china.jpg"


def cmyk_jpeg() -> bytes:
    from PIL import Image

    with Image.open(JPEG) as image:
        out = io.BytesIO()
        image.convert("CMYK").save(out, "JPEG", quality=90)
    return out.getvalue()


CASES: dict[str, tuple[Callable[[], bytes], str]] = {
    "jpeg": (JPEG.read_bytes, "image/jpeg"),
    "cmyk": (cmyk_jpeg, "image/jpeg"),
    "png": ((ROOT / "testdata" / "skimage__brick.png").read_bytes, "image/png"),
}
# (case, optimize mode, JPEG XL at rest): the JPEG's walk depends on the last, the PNG's not.
RUNS = [
    ("jpeg", "inline", True),
    ("jpeg", "deferred", True),
    ("jpeg", "inline", False),
    ("jpeg", "deferred", False),
    ("cmyk", "inline", True),
    ("cmyk", "deferred", True),
    ("png", "inline", True),
    ("png", "deferred", True),
]
COLUMNS = ["probes", "decodes", "oxipng", "mozjpeg", "jxl-enc", "jxl-dec"]
MARK = "UPLOAD-WALK "
COUNTS: Counter[str] = Counter()


def counted(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        COUNTS[name] += 1
        return function(*args, **kwargs)

    return wrapper


def patch_libraries() -> None:
    """Install the counters."""
    import imagecodecs
    import oxipng
    from PIL import Image, ImageFile

    Image.open = counted("probes", Image.open)  # type: ignore[assignment]
    original_load = ImageFile.ImageFile.load

    @functools.wraps(original_load)
    def load(self: ImageFile.ImageFile) -> Any:
        if self.tile:  # ImageFile.load returns at once without tiles: nothing to decode
            COUNTS["decodes"] += 1
        return original_load(self)

    ImageFile.ImageFile.load = load  # type: ignore[method-assign]
    oxipng.optimize_from_memory = counted("oxipng", oxipng.optimize_from_memory)
    imagecodecs.jpegxl_encode_jpeg = counted("jxl-enc", imagecodecs.jpegxl_encode_jpeg)
    imagecodecs.jpegxl_decode_jpeg = counted("jxl-dec", imagecodecs.jpegxl_decode_jpeg)
    module = importlib.import_module("images.compression.mozjpeg")
    module.optimize = counted("mozjpeg", module.optimize)  # type: ignore[attr-defined]


def phase(phase_name: str, status: str, note: str) -> dict[str, Any]:
    row: dict[str, Any] = {"phase": phase_name, "status": status, "note": note}
    row.update({column: COUNTS[column] for column in COLUMNS})
    COUNTS.clear()
    return row


def walk(case: str) -> list[dict[str, Any]]:
    """In a child whose environment holds the settings: one upload, one background pass."""
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    from django.test import Client

    read, content_type = CASES[case]
    data = read()
    patch_libraries()
    COUNTS.clear()
    response = Client().post(
        "/collections/images?deviceId=walk&timestamp=2024-08-18T02%3A05%3A07Z",
        data=data,
        content_type=content_type,
    )
    note = ""
    if response.status_code == 201:
        body = response.json()
        note = f"stored {body['storedSize']}/{body['originalSize']} B {body['contentType']}"
        note += f" optimized={body['optimized']}"
    rows = [phase("request", str(response.status_code), note)]
    out = io.StringIO()
    call_command("optimize", stdout=out)
    rows.append(phase("background", "-", "; ".join(out.getvalue().split("\n")).strip("; ")))
    return rows


def run(case: str, mode: str, at_rest: bool) -> list[dict[str, Any]]:
    """Run :func:`walk` in a child process with the settings of this run."""
    with tempfile.TemporaryDirectory(prefix="upload-walk-") as tmp:
        flag = "1" if at_rest else "0"
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DATABASE_URL": f"sqlite:///{tmp}/db.sqlite3",
            "ALLOWED_HOSTS": "testserver",  # the test client's host
            "IMAGES_OPTIMIZE": mode,
            "IMAGES_COMPACT_JPEG": flag,
        }
        done = subprocess.run(
            [sys.executable, __file__, "--walk", case],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARK)]
    if done.returncode or not lines:
        sys.exit(f"{case} {mode}: the child failed ({done.returncode}):\n{done.stderr[-3000:]}")
    label = mode if case == "png" else f"{mode}, jxl {'on' if at_rest else 'off'}"
    return [{"case": case, "mode": label, **row} for row in json.loads(lines[-1][len(MARK) :])]


def main() -> None:
    if sys.argv[1:2] == ["--walk"]:
        print(MARK + json.dumps(walk(sys.argv[2])))
        return
    headers = ["case", "mode", "phase", *COLUMNS, "status", "note"]
    rows = [[str(row[h]) for h in headers] for spec in RUNS for row in run(*spec)]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    for cells in [headers, *rows]:
        line = "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
        print(line.rstrip())


if __name__ == "__main__":
    main()
