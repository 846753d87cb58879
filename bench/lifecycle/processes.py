"""What ``python -m bench.lifecycle`` measures: serve, its worker, ``manage.py`` commands."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench import support
from bench.support import ROOT, children, cmdline, free_port, reset_peak, rss_mib, start_serve, stop


def serve_env(url: str) -> dict[str, str]:
    """``bench.support.serve_env``, less retention: only the measured prune prunes here."""
    env = support.serve_env(url)
    return {name: value for name, value in env.items() if not name.startswith("IMAGES_RETENTION_")}


@contextmanager
def serving(directory: Path, url: str) -> Iterator[tuple[int, subprocess.Popen]]:
    """``manage.py serve --workers 1`` on a free port; its port and process, stopped on exit."""
    port = free_port()
    log = directory / "serve.log"
    server = start_serve(log, serve_env(url), port, 1, "--coap-port", "0", timeout=120)
    try:
        yield port, server
    finally:
        stop(server, timeout=40)


def granian_worker(server: subprocess.Popen) -> int:
    """serve -> granian's master -> its one worker (the process that runs the app)."""
    for child in children(server.pid):
        if "granian" in cmdline(child):
            workers = children(child)
            if len(workers) == 1:
                return workers[0]
    raise RuntimeError("no single granian worker under serve")


@contextmanager
def rss_sampler(pid: int) -> Iterator[dict[str, float]]:
    """The peak VmRSS of ``pid`` (every 10 ms) and its VmHWM, reset at the start when allowed."""
    figures = {"peak": rss_mib(pid), "hwm": float("nan")}
    reset = reset_peak(pid)
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            figures["peak"] = max(figures["peak"], rss_mib(pid))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield figures
    finally:
        done.set()
        thread.join()
        if reset:
            figures["hwm"] = rss_mib(pid, "VmHWM")


def manage_measured(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run ``manage.py args``; its seconds and peak RSS in MiB (ru_maxrss from wait4)."""
    start = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL
    )
    try:
        while time.monotonic() - start < 1800:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                process.returncode = os.waitstatus_to_exitcode(status)
                if process.returncode:
                    raise RuntimeError(f"manage.py {args[0]} exited with {process.returncode}")
                return time.monotonic() - start, usage.ru_maxrss / 1024
            time.sleep(0.02)
        raise RuntimeError(f"manage.py {args[0]} ran for more than 30 minutes")
    finally:
        if process.returncode is None:
            stop(process)
