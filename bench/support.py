"""What the bench scripts share: the corpus, noise PNGs, ports, ``serve``, /proc, wrk, databases.

The benchmarks keep their own helpers rather than import the test suite's
fixtures: those change for the tests' sake, and a benchmark should run where
pytest is not installed.

Imported as ``bench.support``: every flat bench script puts the repository
root first on ``sys.path`` (in place of ``bench/``, whose ``http.py`` would
shadow the standard library), and the packages (``python -m bench.NAME``) run
from the root, so this module is never a top-level ``support``.
"""

from __future__ import annotations

import io
import os
import random
import re
import resource
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# IMAGE_CORPUS, else the shared corpus next to the repository, else its testdata/.
CORPUS = Path(
    os.environ.get("IMAGE_CORPUS")
    or next(
        (path for path in (ROOT.parent / "shared" / "corpus", ROOT / "testdata") if path.is_dir()),
        ROOT.parent / "shared" / "corpus",
    )
)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff"}


def images_in(directory: Path) -> list[Path]:
    """The image files in ``directory`` (by suffix), sorted."""
    return sorted(path for path in directory.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)


# --- Images -------------------------------------------------------------------


def noise_png(
    side: int, seed: int | None = None, *, mode: str = "RGB", compress_level: int = 6
) -> bytes:
    """A ``side`` x ``side`` PNG of random pixels: incompressible, little for the optimizer to do.

    About ``side²`` bytes per band (``mode`` "RGB": 3, "L": 1). The same
    pixels for the same ``seed``; new ones on every call without one.
    """
    from PIL import Image

    size = side * side * Image.getmodebands(mode)
    pixels = os.urandom(size) if seed is None else random.Random(seed).randbytes(size)
    out = io.BytesIO()
    Image.frombytes(mode, (side, side), pixels).save(out, "PNG", compress_level=compress_level)
    return out.getvalue()


def noise_png_of_size(size: int, seed: int | None = None, *, compress_level: int = 6) -> bytes:
    """An RGB :func:`noise_png` of about ``size`` bytes (30 MB: 3162 x 3162)."""
    return noise_png(int((size / 3) ** 0.5), seed, compress_level=compress_level)


# --- Processes: ports, the service's environment, serve -------------------------


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that nothing is bound to now (TCP, or UDP with SOCK_DGRAM)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    """Until something accepts TCP connections on ``port``; raises if ``process`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early with code {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listened on port {port} within {timeout} s")


def stop(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if ``process`` is still there after ``timeout`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def serve_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment the benches run the service in: this one, on ``database_url``, quiet."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SECRET_KEY": "bench-only-secret",
        "ALLOWED_HOSTS": "127.0.0.1",
        "REQUEST_LOG_LEVEL": "WARNING",
        **extra,
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)  # manage.py's own: config.settings
    return env


def database_kind(database_url: str | None = None) -> str:
    """PostgreSQL or SQLite: what ``database_url`` names, by default what fresh_database makes."""
    url = database_url or os.environ.get("DATABASE_URL", "")
    return "PostgreSQL" if _is_postgresql(url) else "SQLite"


def serve_command(port: int, workers: int, *options: str) -> list[str]:
    """``manage.py serve`` on 127.0.0.1:``port`` with ``workers`` HTTP workers, then ``options``."""
    return [
        *(sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port)),
        *("--workers", str(workers), *options),
    ]


def start_serve(
    log: Path,
    env: dict[str, str],
    port: int,
    workers: int,
    *options: str,
    timeout: float = 60.0,
    new_session: bool = False,
    root: Path = ROOT,
) -> subprocess.Popen:
    """:func:`serve_command` in the repository root (or another checkout's, ``root``), its
    output appended to ``log``.

    Returns once it accepts connections on ``port``; stopped if it never does.
    With ``new_session``, a Ctrl-C in the terminal does not reach it (the
    bench stops it).
    """
    # The child writes to its own copy of the file descriptor.
    with open(log, "ab") as output:
        process = subprocess.Popen(
            serve_command(port, workers, *options),
            cwd=root,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
        )
    try:
        wait_for_port(port, process, timeout=timeout)
    except BaseException:
        stop(process)
        raise
    return process


# --- /proc: process tree, memory, CPU ------------------------------------------


def _stat(pid: int | str) -> list[str]:
    """``/proc/PID/stat`` after the command name (field 3 on: state, ppid, ...); [] once gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def parent_of(pid: int) -> int:
    """The parent's pid; 0 once ``pid`` is gone."""
    fields = _stat(pid)
    return int(fields[1]) if fields else 0


def _children_of_all() -> dict[int, list[int]]:
    children: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            children[parent_of(int(entry.name))].append(int(entry.name))
    return children


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``, now."""
    return _children_of_all()[pid]


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (not ``root`` itself), now."""
    below = _children_of_all()
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.extend(below[pid])
        todo.extend(below[pid])
    return found


def cmdline(pid: int) -> str:
    """The command line of ``pid``, arguments joined by spaces; "" once it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def status_kib(pid: int | str, field: str = "VmRSS") -> int:
    """A KiB figure of ``/proc/PID/status`` (VmRSS, VmHWM, ...; ``"self"``); 0 once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(rf"^{field}:\s+(\d+)", text, re.M)
    if match is None:
        raise RuntimeError(f"no {field} in /proc/{pid}/status")
    return int(match.group(1))


def rss_mib(pid: int | str, field: str = "VmRSS") -> float:
    """:func:`status_kib` in MiB: resident set now by default, or ``VmHWM``, its peak."""
    return status_kib(pid, field) / 1024


def reset_peak(pid: int | str = "self") -> bool:
    """Reset ``pid``'s VmHWM to its current RSS (Linux clear_refs 5); False where not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def process_cpu(pid: int) -> float:
    """CPU seconds one process has used so far (user + system; 0 once it is gone)."""
    fields = _stat(pid)
    if not fields:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def tree_cpu(root: int) -> float:
    """CPU seconds (user + system) of ``root`` and every live descendant."""
    return sum(process_cpu(pid) for pid in [root, *descendants(root)])


def children_cpu() -> float:
    """CPU seconds of this process's children that have ended (each wrk run, say)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_ms(
    work: Callable[[], object], repeat: int, clock: Callable[[], float] = time.process_time
) -> float:
    """Mean CPU milliseconds of ``work`` by ``clock`` (this process's threads), after a warm-up."""
    work()
    started = clock()
    for _ in range(repeat):
        work()
    return (clock() - started) * 1000 / repeat


# --- wrk ----------------------------------------------------------------------

# A wrk script's numbered threads (``tid``) and its request counter (per thread);
# as the scripts are str.format templates, braces are doubled.
WRK_THREADS_LUA = """
local counter = 0
local threads = {{}}
function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end
"""
# Uploads of one file with unique keys (``{prefix}-{thread}``, a microsecond each).
INGEST_LUA = (
    """
local body = io.open("{file}", "rb"):read("*all")"""
    + WRK_THREADS_LUA
    + """function request()
  counter = counter + 1
  local path = string.format(
    "/collections/images?deviceId={prefix}-%d&timestamp=2024-01-01T00:00:00.%06dZ",
    tid, counter)
  return wrk.format("POST", path, {{["Content-Type"] = "{content_type}",
    ["Accept"] = "application/json"}}, body)
end
"""
)


def wrk_command(url: str, seconds: float, connections: int, *extra: str) -> list[str]:
    """wrk (Debian package ``wrk``) on ``url``: ``connections`` over at most 2 threads."""
    threads = min(connections, 2)
    return [
        *("wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:.0f}s", "--latency"),
        *(*extra, url),
    ]


def wrk_figures(out: str) -> dict[str, float]:
    """From wrk's report: requests/s, p50 and p99 in ms, non-2xx/3xx answers (``errors``),
    requests completed and socket errors (connect, read, write, timeout)."""
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    for pct in ("50", "99"):
        match = re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)", out, re.M)
        value, unit = float(match.group(1)), match.group(2)
        result[f"p{pct}"] = value * {"us": 0.001, "ms": 1, "s": 1000}[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["errors"] = int(errors.group(1)) if errors else 0
    result["requests"] = int(re.search(r"(\d+) requests in", out).group(1))
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    result["socket_errors"] = sum(int(n) for n in sockets.groups()) if sockets else 0
    return result


def wrk(url: str, seconds: float, connections: int, *extra: str) -> dict[str, float]:
    """Run :func:`wrk_command`; its :func:`wrk_figures`. Raises RuntimeError if wrk fails."""
    done = subprocess.run(
        wrk_command(url, seconds, connections, *extra), capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(f"wrk on {url} failed: {done.stdout}{done.stderr}")
    return wrk_figures(done.stdout)


def print_wrk(name: str, figures: dict[str, float]) -> None:
    """One row: ``name``, requests/s, p50, p99 and errors."""
    print(
        f"{name:<44} {figures['rps']:>9.1f} req/s   p50 {figures['p50']:>7.2f} ms"
        f"   p99 {figures['p99']:>7.2f} ms   errors {figures['errors']:.0f}",
        flush=True,
    )


def query_database(database_url: str, sql: str, params: tuple = ()) -> list[tuple]:
    """Run one statement on a SQLite or PostgreSQL URL; ``?`` placeholders on both."""
    if database_url.startswith("sqlite:///"):
        with closing(sqlite3.connect(database_url.removeprefix("sqlite:///"))) as db:
            rows = db.execute(sql, params).fetchall()
            db.commit()
            return rows
    import psycopg

    with psycopg.connect(database_url) as db:
        cursor = db.execute(sql.replace("?", "%s"), params)
        return cursor.fetchall() if cursor.description else []


def _is_postgresql(url: str) -> bool:
    return url.startswith(("postgres://", "postgresql://"))


@contextmanager
def fresh_database(directory: Path) -> Iterator[str]:
    """The URL of a new, empty database of the kind the environment names.

    A SQLite file in ``directory`` by default; when ``DATABASE_URL`` names
    PostgreSQL, a throwaway database on that server, dropped on exit (with
    FORCE, since a server that was killed may still hold connections).
    """
    outer = os.environ.get("DATABASE_URL", "")
    if not _is_postgresql(outer):
        yield f"sqlite:///{directory / 'db.sqlite3'}"
        return
    import psycopg

    server = outer.rsplit("/", 1)[0]
    name = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as db:
        db.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{server}/{name}"
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as db:
            db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
