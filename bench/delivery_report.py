"""bench/deliveries.py's report: its runs, their rows, the medians and the latency lines."""

from __future__ import annotations

import argparse
import math
import random
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from bench.delivery_service import LIVE, Uploads


class Report:
    """Lines printed and written to the output file as they come."""

    def __init__(self, path: Path) -> None:
        self.file: TextIO = open(path, "w")  # noqa: SIM115 - closed at the end of main

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        self.file.write(line + "\n")
        self.file.flush()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def latencies(answered: dict[str, float], arrivals: list[dict[str, float]]) -> list[float]:
    """Seconds from each 201 to the image's first arrival, over every receiver given."""
    return [
        arrived - answered[image_id]
        for receiver in arrivals
        for image_id, arrived in receiver.items()
        if image_id in answered
    ]


@dataclass
class Run:
    name: str
    delivering: bool
    uploads: Uploads
    cpu: dict[str, float]
    box_busy: float
    others: float  # CPU seconds of the receivers' process and the broker while uploading
    nice: int = 0  # the deliverer's
    spin: bool = False  # an idle-class busy loop per core beside the uploads
    caught_up: float = 0.0  # seconds from the last 201 to the last arrival
    deliver_cpu_until_caught_up: float = 0.0
    arrivals: dict = field(default_factory=dict)
    problems: dict[str, int] = field(default_factory=dict)


def label(run: Run) -> str:
    if not run.delivering:
        return "none, idle-class spinners" if run.spin else "none"
    return "10 hooks + MQTT" + (f", nice {run.nice}" if run.nice else "")


def row(run: Run) -> str:
    ms = [1000 * value for value in run.uploads.latencies]
    caught = f"{run.caught_up:7.2f}" if run.delivering else f"{'-':>7}"
    deliver_until = f"{run.deliver_cpu_until_caught_up:6.2f}" if run.delivering else f"{'-':>6}"
    problems = ", ".join(f"{kind}: {n}" for kind, n in run.problems.items())
    return (
        f"{run.name:<4} {label(run):<25}"
        f"{run.uploads.rate:9.1f} {percentile(ms, 0.5):7.1f} {percentile(ms, 0.99):7.1f} "
        f"{run.cpu.get('http', 0):7.2f} {run.cpu.get('deliver', 0):7.2f} {deliver_until} "
        f"{caught} {run.others:7.2f} {100 * run.box_busy:5.0f}%"
        + (f"  errors {run.uploads.errors}" if run.uploads.errors else "")
        + (f"  [{problems}]" if problems else "")
    )


def summary(say: Report, runs: list[Run], kinds: list[tuple[str, bool, int]]) -> None:
    """Per kind of run: the median rate, its ratio to A's, CPU per upload, the cost it implies.

    On a box whose cores are all busy (this one, shared), serve gets a share
    of them: the CPU-implied cost, 1 - A's HTTP CPU per upload / (this run's
    HTTP + deliverer CPU per upload), is the rate lost if serve's share stays
    the same. It varies less than the rates, which move with the other work.
    """
    per_upload = {
        run.name: (
            run.cpu.get("http", 0) / len(run.uploads.answered),
            run.deliver_cpu_until_caught_up / len(run.uploads.answered),
        )
        for run in runs
    }
    plain = [run for run in runs if run.name.startswith("A")]
    none = statistics.median(run.uploads.rate for run in plain)
    http_none = statistics.median(per_upload[run.name][0] for run in plain)
    for letter, delivering, _ in kinds:
        these = [run for run in runs if run.name.startswith(letter)]
        rate = statistics.median(run.uploads.rate for run in these)
        http = statistics.median(per_upload[run.name][0] for run in these)
        line = (
            f"{letter} ({label(these[0])}): median {rate:.1f} uploads/s, "
            f"HTTP workers {1000 * http:.2f} ms CPU per upload"
        )
        if not delivering and letter != "A":
            line += f"; rate ratio to A {rate / none:.3f}: cost {100 * (1 - rate / none):.1f} %"
        if delivering:
            deliverer = statistics.median(per_upload[run.name][1] for run in these)
            implied = 1 - http_none / (http + deliverer)
            line += (
                f", the deliverer {1000 * deliverer:.2f} ms ({1000 * deliverer / (LIVE + 1):.2f}"
                f" per receiver); rate ratio to A {rate / none:.3f}: cost "
                f"{100 * (1 - rate / none):.1f} % (CPU-implied {100 * implied:.1f} %)"
            )
        say(line)
        if letter != "A":
            say(per_pair(runs, letter))


def per_pair(runs: list[Run], letter: str) -> str:
    """Each run's rate over its pair's A, their median, and a 95 % bootstrap interval of it.

    The pairs' ratios cancel what moves a whole pair (the box's other work);
    the interval says how far the median may be from what more pairs would
    give (percentile bootstrap, 10,000 resamples, a fixed seed).
    """
    rates = {run.name: run.uploads.rate for run in runs}
    ratios = [
        rates[name] / rates["A" + name[1:]]
        for name in rates
        if name.startswith(letter) and "A" + name[1:] in rates
    ]
    middle = statistics.median(ratios)
    draw = random.Random(0)
    medians = sorted(statistics.median(draw.choices(ratios, k=len(ratios))) for _ in range(10_000))
    low, high = medians[249], medians[9_749]
    return (
        f"  per pair: {', '.join(f'{ratio:.2f}' for ratio in ratios)}; median {middle:.3f} "
        f"(cost {100 * (1 - middle):.1f} %), 95 % interval {low:.3f}-{high:.3f} "
        f"(cost {100 * (1 - high):.1f}-{100 * (1 - low):.1f} %)"
    )


def under_load(
    say: Report, args: argparse.Namespace, runs: list[Run], delivered: list[Run]
) -> None:
    """Latency lines pooled over the B runs (and the C runs, if any)."""
    hooks = [latencies(run.uploads.answered, run.arrivals["hooks"]) for run in delivered]
    mqtt = [latencies(run.uploads.answered, [run.arrivals["mqtt"][0]]) for run in delivered]
    answered = sum(len(run.uploads.answered) for run in delivered)
    say(
        latency_line(
            f"webhooks, under load ({len(delivered)} B runs)",
            [v for values in hooks for v in values],
            answered * LIVE,
        )
    )
    say(latency_line("MQTT, under load", [v for values in mqtt for v in values], answered))
    reniced = [run for run in runs if run.nice]
    if reniced:
        answered = sum(len(run.uploads.answered) for run in reniced)
        values = [latencies(run.uploads.answered, run.arrivals["hooks"]) for run in reniced]
        say(
            latency_line(
                f"webhooks, under load, C (deliverer at nice {args.also_nice})",
                [v for each in values for v in each],
                answered * LIVE,
            )
        )
        values = [latencies(run.uploads.answered, [run.arrivals["mqtt"][0]]) for run in reniced]
        say(
            latency_line(
                "MQTT, under load, C",
                [v for each in values for v in each],
                answered,
            )
        )


def latency_line(label: str, values: list[float], expected: int) -> str:
    ms = [1000 * value for value in values]
    if not ms:
        return f"{label:<44} no arrivals (expected {expected})"
    return (
        f"{label:<44} {percentile(ms, 0.5):8.1f} {percentile(ms, 0.99):8.1f} "
        f"{max(ms):8.1f} {len(ms):7d} {expected - len(ms):8d}"
    )
