"""The measurements of ``python -m bench.live`` but its rates, each printing as it goes.

Opening and closing every stream and registration (``open_all``,
``close_all``), the resident set before and after (``print_memory``), a warm-up
upload per device (``settle``), ``latency`` from each upload's ``201`` to its
deliveries (``percentile``, ``summary``). The rates with wrk are in
``bench.live.rates``.
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
from collections import Counter, defaultdict
from typing import Any

from bench.live.clients import WatcherProcess
from bench.live.server import Layout, Server, Stamps, small_png, udp_counters

SETTLE_SECONDS = 2.0
LOADED_UPLOADS = 20  # timed uploads under load (each recorded on every stream)
LINGER_SECONDS = 2.0


def percentile(ordered: list[float], fraction: float) -> float:
    """Nearest rank."""
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def summary(latencies: list[float]) -> str:
    if not latencies:
        return "no deliveries"
    ordered = sorted(latencies)
    late = sum(value > 1.0 for value in ordered)
    return (
        f"p50 {percentile(ordered, 0.5) * 1000:7.1f} ms"
        f"  p99 {percentile(ordered, 0.99) * 1000:7.1f} ms"
        f"  max {ordered[-1] * 1000:7.1f} ms  min {ordered[0] * 1000:6.1f} ms  over 1 s: {late}"
    )


def open_all(watcher: WatcherProcess, layout: Layout, args: argparse.Namespace) -> dict:
    opened = watcher.call("open", layout.paths, layout.observed, args.per_socket, not args.non)
    layout.observing = opened["observing"]
    streams_ok = opened["streams"].get(200, 0)
    observing = len(layout.observing)
    print(
        f"opened {streams_ok}/{len(layout.paths)} streams in {opened['streams_seconds']:.1f} s"
        + _others(opened["streams"], 200)
        + f"; {observing}/{len(layout.observed)} registrations in"
        f" {opened['observers_seconds']:.1f} s" + _others(opened["observers"], "observing"),
        flush=True,
    )
    return opened


def _others(outcomes: Counter, good: Any) -> str:
    bad = {key: count for key, count in outcomes.items() if key != good}
    return f" (failed: {bad})" if bad else ""


def close_all(watcher: WatcherProcess) -> None:
    closed = watcher.call("close")
    print(
        f"closed them in {closed['seconds']:.1f} s ({closed['deregistered']} registrations"
        f" cancelled with Observe: 1, {closed['unanswered']} unanswered)",
        flush=True,
    )


def print_memory(before: dict, after: dict, streams: int, observers: int, label: str) -> None:
    parts = []
    for name, count, unit in (
        ("events", streams, "stream"),
        ("coap", observers, "registration"),
    ):
        grown = after.get(name, 0) - before.get(name, 0)
        per = f", {grown / count:.1f} KiB per {unit}" if count else ""
        who = "stream listener" if name == "events" else "runcoap"
        parts.append(
            f"{who} {before.get(name, 0) / 1024:.1f} -> {after.get(name, 0) / 1024:.1f} MiB"
            f" ({grown / 1024:+.1f} MiB{per})"
        )
    print(f"RSS {label}: " + "; ".join(parts), flush=True)


def settle(server: Server, watcher: WatcherProcess, layout: Layout, stamps: Stamps) -> None:
    """One upload per watched device (not measured), so every path is warm; then drop it."""
    for device in layout.devices:
        server.upload(small_png(next(PNG_NUMBERS)), device, stamps())
    time.sleep(SETTLE_SECONDS)
    watcher.call("collect", True)


PNG_NUMBERS = itertools.count(1)


def latency(
    server: Server,
    watcher: WatcherProcess,
    layout: Layout,
    args: argparse.Namespace,
    stamps: Stamps,
) -> None:
    uploads = []  # (device, id, etag hex, time of the 201)
    udp = udp_counters()
    started = time.monotonic()
    for number in range(args.uploads):
        delay = started + number * args.interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        device = layout.devices[number % len(layout.devices)]
        meta, arrived = server.upload(small_png(next(PNG_NUMBERS)), device, stamps())
        uploads.append((device, meta["id"], meta["sha256"][:16], arrived))
    time.sleep(LINGER_SECONDS)
    found = watcher.call("collect", False)
    udp = {name: value - udp[name] for name, value in udp_counters().items()}

    watchers_of: dict[str, list[int]] = defaultdict(list)
    for index, device in enumerate(layout.watched):
        watchers_of[device or "*"].append(index)
    observers_of: dict[str, list[int]] = defaultdict(list)
    for index in layout.observing:
        observers_of[layout.observed[index]].append(index)

    for label, arrivals, key, expected_of in (
        ("event streams", found["sse"], 1, lambda d: watchers_of[d] + watchers_of["*"]),
        ("Observe", found["coap"], 2, lambda d: observers_of[d]),
    ):
        latencies, slowest = [], []
        expected = missing = duplicates = stray = 0
        for upload in uploads:
            device, arrived = upload[0], upload[3]
            wanted = set(expected_of(device))
            first: dict[int, float] = {}
            for index, moment in arrivals.get(upload[key], ()):
                if index not in wanted:
                    stray += 1
                elif index in first:
                    duplicates += 1
                else:
                    first[index] = moment
            expected += len(wanted)
            missing += len(wanted) - len(first)
            these = [moment - arrived for moment in first.values()]
            latencies.extend(these)
            if these:
                slowest.append(max(these))
        print(
            f"  {label:<14} {expected:6d} expected, {len(latencies):6d} delivered,"
            f" {missing} missing, {duplicates} duplicates, {stray} to others",
            flush=True,
        )
        print(f"  {'':<14} {summary(latencies)}")
        if slowest:
            print(f"  {'':<14} last delivery of each upload: {summary(slowest)}")
    others = {
        "streams ended by the server": found["ended"],
        "unmatched CoAP messages": found["coap_unmatched"],
    }
    others.update({f"CoAP socket {name}": count for name, count in found["coap_errors"].items()})
    # Any UDP datagram lost on this machine meanwhile (all of it is this bench's).
    others.update({f"kernel UDP {name}": udp[name] for name in ("RcvbufErrors", "SndbufErrors")})
    if any(others.values()):
        print("  " + ", ".join(f"{name}: {count}" for name, count in others.items() if count))
