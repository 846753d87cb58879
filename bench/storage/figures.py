"""Timing and printing for ``python -m bench.storage``: ``Samples``, ``timed``, ``table``."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.storage.clients import CLIENTS


@dataclass
class Samples:
    """One client's figures for one case: seconds per operation, requests in all."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    requests: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, other: dict[str, Any]) -> None:
        self.wall += other["wall"]
        self.cpu += other["cpu"]
        self.requests += other["requests"]
        for name, values in other.get("extra", {}).items():
            self.extra.setdefault(name, []).extend(values)


def timed(operation: Callable[[int], Any], iterations: int, start: int = 0) -> dict[str, Any]:
    """Wall and CPU seconds of ``operation(i)``, ``i`` counting ``iterations`` from ``start``."""
    wall, cpu = [], []
    for i in range(start, start + iterations):
        cpu_started, started = time.process_time(), time.perf_counter()
        operation(i)
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    return {"wall": wall, "cpu": cpu, "requests": 0}


def ms(seconds: float) -> str:
    return f"{seconds * 1000:9.2f}"


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[8] if len(values) > 1 else values[0]


def table(results: dict[tuple[str, str], Samples], *, big: bool) -> None:
    header = (
        f"{'case':28} {'client':9} {'median ms':>9} {'p90 ms':>9} {'CPU ms/op':>9} {'req/op':>6}"
    )
    print(header + (f" {'1st piece ms':>12} {'peak RSS +MiB':>13}" if big else ""))
    for (case, name), samples in results.items():
        count = len(samples.wall)
        median, cpu = statistics.median(samples.wall), sum(samples.cpu) / count
        line = (
            f"{case if name == CLIENTS[0] else '':28} {name:9} {ms(median)} {ms(p90(samples.wall))}"
            f" {ms(cpu)} {samples.requests / count:6.1f}"
        )
        if big:
            first = samples.extra.get("first_piece")
            line += f" {ms(statistics.median(first)) if first else '-':>12}"
            exact = all(samples.extra["exact_peak"])
            line += f" {max(samples.extra['peak_growth_mib']):12.1f}{'' if exact else '?'}"
        print(line)
