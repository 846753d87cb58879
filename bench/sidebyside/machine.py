"""How busy the machine is, and wrk, for ``python -m bench.sidebyside``."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from bench import support


def machine_cpu() -> float:
    """CPU seconds every core of the machine has been busy since boot (``/proc/stat``)."""
    with open("/proc/stat") as stat:
        user, nice, system, idle, iowait, irq, softirq, steal = map(
            int, stat.readline().split()[1:9]
        )
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def busy_cores(seconds: float) -> float:
    """How many cores the whole machine kept busy over the next ``seconds``."""
    before = machine_cpu()
    time.sleep(seconds)
    return (machine_cpu() - before) / seconds


def settle(patience: float) -> float:
    """Wait up to ``patience`` seconds for a quiet machine (other work skews every figure).

    Quiet: under 0.25 busy cores over 3 s. Returns the last figure.
    """
    deadline = time.monotonic() + patience
    while (busy := busy_cores(3.0)) >= 0.25 and time.monotonic() < deadline:
        pass
    return busy


@dataclass
class Wrk:
    rps: float
    requests: int
    errors: int


def wrk(url: str, seconds: float, *extra: str) -> Wrk:
    """wrk at 4 connections, 2 threads: req/s, completed requests, failures (non-2xx, socket)."""
    figures = support.wrk(url, seconds, 4, "--timeout", "30s", *extra)
    return Wrk(
        rps=figures["rps"],
        requests=int(figures["requests"]),
        errors=int(figures["errors"] + figures["socket_errors"]),
    )
