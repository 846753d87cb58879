"""Worst cases of hostile input, measured per operation, before and after the fixes (issue 23).

Usage:
    python bench/hostile.py [--tree PATH] [--only WORD ...] [--timeout 60]
    python bench/hostile.py --compare OLD_TREE [--tree PATH]

``--tree`` (default: this checkout) is the source tree measured: its
``images`` and ``config``, this checkout's interpreter and packages. With
``--compare OLD_TREE`` both are measured and printed side by side, for
instance the tree before the fixes of issue 23, made with
``git worktree add /tmp/hostile-before 7d96509`` (the last commit before
them). ``--only`` runs the operations whose key contains a word.

Each operation runs in a fresh process (bench/hostile_child.py) on a new
SQLite database, in process (Django's test client or ``call_command``), as
``serve`` configures it (IMAGES_OPTIMIZE=deferred, JPEG XL at rest); what
it needs is set up first, unmeasured:

- an upload's answer, at the limits (IMAGES_MAX_PIXELS, IMAGES_MAX_JPEG_SCANS
  within IMAGES_MAX_BYTES) and past them (the scan and MP index bombs);
- one background pass (``optimize``) over an image stored by such an upload;
- the first thumbnail (256 px, WebP) of the worst JPEG an upload stores,
  and of the scan bomb's row written directly (as the tree before stored
  it, and as a row stored before the limit stays);
- one ``importimages`` of each hostile archive;
- a ``Last-Event-ID`` replay on ``/events`` in a table of 50,000 images
  (the mean of five, after one that starts the process's hub).

The inputs are built by bench/hostile_inputs.py into ``--inputs`` (kept
for the next run). CPU is user + system of the operation's process and its
children; peak is that process's resident set during the operation, and in
brackets what it grew by (the idle Django process is about 50 MiB; an
upload's body is in it twice, the test client's copy and the request's).
An operation is stopped once it has used ``--timeout`` seconds of CPU, or
twice that in wall time, and shown as ``> N`` with what it had used by
then. CPU figures hold on a busy machine; wall times grow with its load.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # bench/ first would shadow the standard library (bench/http.py)
from bench import hostile_inputs as build  # noqa: E402
from bench import support  # noqa: E402

CHILD = ROOT / "bench" / "hostile_child.py"
SETUP_TIMEOUT = 900.0  # seconds before an operation starts (an upload a thumbnail needs, say)
REPLAY_ROWS = 50_000
JPEG, PNG = "image/jpeg", "image/png"


def jpeg_limits(into: Path) -> Path:
    """10,000 x 10,000 progressive RGB JPEG, its last scan repeated to 100 scans (about 24 MB)."""
    make = lambda: build.with_scans(build.gradient_jpeg(10_000), 100)  # noqa: E731
    return build.built_bytes(into, "jpeg-100mp-100-scans.jpg", make)


def png_limits(into: Path) -> Path:
    return build.built(into, "png-100mp-rgba16-zero.png", lambda p: build.write_zero_png(p, 10_000))


def scan_bomb(into: Path) -> Path:
    """The issue's bomb: 5,000 x 4,000 grey, 2,000 scans (about 150 KB)."""
    make = lambda: build.with_scans(build.flat_jpeg(5000, 4000), 2000)  # noqa: E731
    return build.built_bytes(into, "bomb-20mp-2000-scans.jpg", make)


def scan_bomb_limits(into: Path) -> Path:
    """At the pixel limit: 10,000 x 10,000 grey, 2,000 scans (about 0.7 MB)."""
    make = lambda: build.with_scans(build.flat_jpeg(10_000, 10_000), 2000)  # noqa: E731
    return build.built_bytes(into, "bomb-100mp-2000-scans.jpg", make)


def mp_bomb(into: Path) -> Path:
    make = lambda: build.mp_index_bomb(4079, build.small_jpeg())  # noqa: E731
    return build.built_bytes(into, "mp-index-4079-entries.jpg", make)


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    op: str
    make: Callable[[Path], Path] | None = None  # the input file
    args: tuple[str, ...] = ()

    def argv(self, into: Path) -> list[str]:
        return [*([str(self.make(into))] if self.make else []), *self.args]


CASES = [
    Case("upload-jpeg", "upload: JPEG 100 MP, 100 scans (allowed)", "upload", jpeg_limits, (JPEG,)),
    Case("upload-png", "upload: PNG 100 MP, RGBA 16-bit", "upload", png_limits, (PNG,)),
    Case("upload-bomb", "upload: JPEG 20 MP, 2,000 scans", "upload", scan_bomb, (JPEG,)),
    Case("upload-bomb100", "upload: JPEG 100 MP, 2,000 scans", "upload", scan_bomb_limits, (JPEG,)),
    Case("upload-mp", "upload: MP index of 4,079 entries", "upload", mp_bomb, (JPEG,)),
    Case(
        "optimize-jpeg",
        "background pass: JPEG 100 MP, 100 scans",
        "background",
        jpeg_limits,
        (JPEG,),
    ),
    Case("optimize-png", "background pass: PNG 100 MP, RGBA 16", "background", png_limits, (PNG,)),
    Case("optimize-mp", "background pass: MP index of 4,079", "background", mp_bomb, (JPEG,)),
    Case("thumb-jpeg", "thumbnail: JPEG 100 MP, 100 scans", "thumbnail", jpeg_limits, (JPEG,)),
    Case(
        "thumb-bomb",
        "thumbnail: JPEG 20 MP, 2,000 scans (its row)",
        "thumbnail",
        scan_bomb,
        (JPEG, "written"),
    ),
    Case(
        "import-unpaired",
        "import: 300 unpaired 1 MiB members (.tar.gz)",
        "import",
        lambda into: build.built(into, "unpaired-300.tar.gz", build.write_unpaired),
    ),
    Case(
        "import-unpaired-tar",
        "import: 300 unpaired 1 MiB members (.tar)",
        "import",
        lambda into: build.built(
            into, "unpaired-300.tar", lambda path: build.write_unpaired(path, compressed=False)
        ),
    ),
    Case(
        "import-huge",
        "import: one 600 MiB member (.tar.xz)",
        "import",
        lambda into: build.built(into, "member-600mib.tar.xz", build.write_huge_member),
    ),
    Case(
        "import-pax",
        "import: a 200 MiB pax header (.tar.gz)",
        "import",
        lambda into: build.built(into, "pax-200mib.tar.gz", build.write_pax_header),
    ),
    Case(
        "import-objects",
        "import: 40 metadata members of 1 MiB of {}",
        "import",
        lambda into: build.built(into, "metadata-objects-40.tar.gz", build.write_metadata_objects),
    ),
    Case(
        "import-metadata",
        "import: bad originalSize x3, then 3 good",
        "import",
        lambda into: build.built(into, "bad-metadata.tar", build.write_bad_metadata),
    ),
    Case(
        "replay-oldest",
        "replay /events from the oldest of 50,000",
        "replay",
        args=(str(REPLAY_ROWS), str(REPLAY_ROWS - 1)),
    ),
    Case(
        "replay-recent",
        "replay /events from 10th newest of 50,000",
        "replay",
        args=(str(REPLAY_ROWS), "10"),
    ),
]


def _lines(stream: object, into: queue.Queue[str | None]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        into.put(line.rstrip("\n"))
    into.put(None)


def _watch(
    child: subprocess.Popen, lines: queue.Queue[str | None], budget: float
) -> dict[str, object] | None:
    """The child's RESULT; or, once its operation passes its budget, what it had used by then.

    The budget is CPU seconds of the child's process tree (robust to other
    load on the machine), or twice that in wall seconds.
    """
    result: dict[str, object] | None = None
    began, started, cpu_at_start = time.monotonic(), None, 0.0
    while True:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            line = ""
        if line is None:
            return result
        if line == "START":
            started, cpu_at_start = time.monotonic(), support.tree_cpu(child.pid)
        elif line.startswith("RESULT "):
            result = json.loads(line.removeprefix("RESULT "))
        now = time.monotonic()
        if started is None and now - began > SETUP_TIMEOUT:
            _stop(child)
            return {"outcome": f"its set-up took more than {SETUP_TIMEOUT:.0f} s"}
        if started is None or result is not None:
            continue
        cpu, wall = support.tree_cpu(child.pid) - cpu_at_start, now - started
        if cpu > budget or wall > 2 * budget:
            peak = support.rss_mib(child.pid, "VmHWM")
            _stop(child)
            said = f"stopped after {cpu:.0f} s of CPU, {wall:.0f} s of wall"
            return {"stopped": True, "cpu": cpu, "wall": wall, "peak": peak, "outcome": said}


def _stop(child: subprocess.Popen) -> None:
    """SIGKILL to the child's process group (its own session: it and what it started)."""
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()


def run_case(case: Case, tree: Path, inputs: Path, timeout: float) -> dict[str, object]:
    """Run one case's child against ``tree``; its RESULT, or what was seen when it was stopped."""
    argv = case.argv(inputs)
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        env = support.serve_env(
            f"sqlite:///{tmp}/db.sqlite3",
            ALLOWED_HOSTS="testserver",
            DEBUG="0",
            TMPDIR=tmp,
        )
        # The defaults, whatever this shell sets: limits, storage, cache.
        for name in [name for name in env if name.startswith(("IMAGES_", "REDIS_", "S3_"))]:
            del env[name]
        env.update(DJANGO_SETTINGS_MODULE="config.settings", IMAGES_OPTIMIZE="deferred")
        log = Path(tmp) / "child.log"
        with log.open("w") as errors:
            child = subprocess.Popen(
                [sys.executable, str(CHILD), str(tree), case.op, *argv],
                cwd=tree,
                env=env,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
                start_new_session=True,  # its process group: stopped whole on a timeout
            )
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_lines, args=(child.stdout, lines), daemon=True).start()
        result = _watch(child, lines, timeout)
        child.wait()
        if result is None:
            tail = log.read_text()[-2000:]
            print(
                f"{case.key} on {tree}: the child failed ({child.returncode}):\n{tail}",
                file=sys.stderr,
            )
            return {"outcome": f"bench child failed ({child.returncode})"}
        return result


def size_of(case: Case, inputs: Path) -> str:
    if case.make is None:
        return f"{REPLAY_ROWS:,} rows"
    size = case.make(inputs).stat().st_size
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} KB"


def figures(result: dict[str, object]) -> list[str]:
    """CPU s, wall s, peak MiB (+ over the process's RSS before), as printed."""
    if "cpu" not in result:
        return ["-", "-", "-"]
    if "stopped" in result:
        return [f"> {result['cpu']:.0f}", f"> {result['wall']:.0f}", f">= {result['peak']:,.0f}"]
    grown = result["peak"] - result["base"]  # type: ignore[operator]
    return [
        *map(_seconds, (result["cpu"], result["wall"])),
        f"{result['peak']:,.0f} (+{grown:,.0f})",
    ]


def _seconds(value: object) -> str:
    return f"{value:.3f}" if value < 0.1 else f"{value:.2f}"  # type: ignore[operator]


def commit_of(tree: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(tree), "log", "-1", "--format=%h %s"], capture_output=True, text=True
    )
    return done.stdout.strip()[:72] or "not a git checkout"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tree", type=Path, default=ROOT, help="source tree to measure")
    parser.add_argument("--compare", type=Path, help="an older tree, measured first")
    parser.add_argument("--only", nargs="*", default=[], help="keys containing any of these")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="CPU seconds per operation (2x in wall)"
    )
    parser.add_argument(
        "--inputs", type=Path, default=Path(tempfile.gettempdir()) / "hostile-bench-inputs"
    )
    options = parser.parse_args()
    trees = [tree.resolve() for tree in ([options.compare] if options.compare else [])]
    trees.append(options.tree.resolve())
    cases = [c for c in CASES if not options.only or any(w in c.key for w in options.only)]
    options.inputs.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    sizes = {case.key: size_of(case, options.inputs) for case in cases}  # builds what is missing
    print(f"inputs ready in {time.monotonic() - began:.0f} s ({options.inputs})", file=sys.stderr)
    names = ["before", "after"] if len(trees) == 2 else ["tree"]
    for name, tree in zip(names, trees, strict=True):
        print(f"{name}: {tree} at {commit_of(tree)}")
    print(
        f"SQLite, IMAGES_OPTIMIZE=deferred; an operation is stopped past {options.timeout:.0f} s"
        f" of CPU or {2 * options.timeout:.0f} s of wall"
    )
    group = " {:>7} {:>7} {:>15}"
    width = len(group.format("", "", ""))
    print(" " * 59 + "".join(f" {' ' + name + ' ':-^{width - 1}}" for name in names))
    header = f"{'operation':<46} {'input':>12}" + group.format("CPU s", "wall s", "peak MiB") * len(
        names
    )
    print(header)
    print("-" * len(header))
    for case in cases:
        results = [run_case(case, tree, options.inputs, options.timeout) for tree in trees]
        cells = "".join(group.format(*figures(result)) for result in results)
        print(f"{case.label:<46} {sizes[case.key]:>12}{cells}")
        for name, result in zip(names, results, strict=True):
            print(f"    {name + ':':<8}{str(result['outcome'])[:200]}", flush=True)
    print(f"({time.monotonic() - began:.0f} s in all)")


if __name__ == "__main__":
    main()
