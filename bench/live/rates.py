"""The upload and download rates of ``python -m bench.live``, with the clients open and not.

``rates`` (wrk in rounds, with the CPU each process used and the box's idle
share), ``latency_under_load`` (``latency`` again while wrk uploads), the image
they upload (``rate_image``) and the deferred optimizer ``paused`` meanwhile.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.live.clients import WatcherProcess
from bench.live.measure import (
    LINGER_SECONDS,
    LOADED_UPLOADS,
    close_all,
    latency,
    open_all,
    print_memory,
)
from bench.live.server import Layout, Server, Stamps, cpu_seconds, memory
from bench.support import (
    INGEST_LUA,
    children_cpu,
    noise_png,
    query_database,
    wrk,
    wrk_command,
    wrk_figures,
)


def rate_image(args: argparse.Namespace, tmp: Path) -> tuple[Path, str]:
    """The image the rate rounds upload, and its media type."""
    image = args.rate_image
    if image is None:
        image = tmp / "noise-32x32.png"
        image.write_bytes(noise_png(32))
    return image, "image/jpeg" if image.suffix.lower() in (".jpg", ".jpeg") else "image/png"


def latency_under_load(
    server: Server,
    watcher: WatcherProcess,
    layout: Layout,
    args: argparse.Namespace,
    stamps: Stamps,
    tmp: Path,
) -> None:
    """``latency`` again (shorter), while wrk uploads to unwatched devices as fast as it can.

    Under a stream of uploads the listener reads its channel at a pace
    (images.live.Hub.PACE_SECONDS), so deliveries wait longer than alone.
    """
    image, content_type = rate_image(args, tmp)
    script = tmp / "upload-load.lua"
    script.write_text(INGEST_LUA.format(file=image, prefix="load", content_type=content_type))
    timed = argparse.Namespace(**{**vars(args), "uploads": LOADED_UPLOADS, "interval": 0.25})
    seconds = math.ceil(1 + timed.uploads * timed.interval + LINGER_SECONDS)
    print(
        f"the same under load: {timed.uploads} uploads {timed.interval} s apart while wrk"
        f" -c{args.connections} uploads {image.name} to unwatched devices (each an event on"
        " every /events stream)",
        flush=True,
    )
    load = subprocess.Popen(
        wrk_command(server.url, seconds, args.connections, "-s", str(script)),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)  # wrk at full rate
        watcher.call("collect", True)  # what came so far is dropped
        latency(server, watcher, layout, timed, stamps)
    finally:
        out, _ = load.communicate(timeout=seconds + 60)
    print(f"  wrk meanwhile: {wrk_figures(out)['rps']:.1f} uploads/s", flush=True)


def rates(
    server: Server,
    watcher: WatcherProcess,
    layout: Layout,
    args: argparse.Namespace,
    tmp: Path,
    database_url: str,
) -> None:
    image, content_type = rate_image(args, tmp)
    meta, _ = server.upload(
        image.read_bytes(), "rate-download", "2024-01-01T00:00:00Z", content_type
    )
    item = f"{server.url}{meta['href']}"
    every = [index for index, device in enumerate(layout.watched) if device is None]
    print(
        f"rates: wrk -t2 -c{args.connections}, {args.seconds} s each; uploads of"
        f" {image.name} ({image.stat().st_size:,} bytes) to unwatched devices (but each is"
        f" an event on the {len(every)} /events streams), downloads of it by id",
        flush=True,
    )
    print(
        "CPU s during the uploads: each role's processes (http: each WSGI worker; listener:"
        " the stream listener; watcher: this bench's clients; wrk), and the box's idle share;"
        " backlog: images waiting for the optimizer as the round starts. A rate marked ! had"
        " a worker idle for most of its run: wrk's few keep-alive connections all went to the"
        " other (granian's workers take connections as they come), so it measures one worker",
        flush=True,
    )
    print(
        f"{'round':>5} {'open':>4} {'uploads/s':>9} {'p99 ms':>7} {'downloads/s':>11}"
        f" {'p99 ms':>7} {'errors':>6} {'/events deliveries':>18} {'backlog':>7}"
        f" {'CPU s:':>6} {'http':>9} {'listener':>8} {'coap':>5} {'optimizer':>9} {'watcher':>7}"
        f" {'wrk':>4} {'idle':>5}",
        flush=True,
    )
    # Not counted: the first run of each is slower, whatever is open.
    script = tmp / "upload-warm-up.lua"
    script.write_text(INGEST_LUA.format(file=image, prefix="warm-up", content_type=content_type))
    wrk(server.url, min(3, args.seconds), args.connections, "-s", str(script))
    wrk(item, min(3, args.seconds), args.connections)
    is_open = True
    results: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    # Per phase (uploads, downloads): the rates of the rounds both workers served.
    even: dict[bool, tuple[list[float], list[float]]] = {True: ([], []), False: ([], [])}
    for number in range(args.rounds):
        want_open = number % 4 in (0, 3)
        if want_open != is_open:
            before = memory(server)
            if want_open:
                open_all(watcher, layout, args)
                after = memory(server)
                print_memory(before, after, len(layout.paths), len(layout.observing), "opened")
            else:
                close_all(watcher)
                print_memory(before, memory(server), 0, 0, "closed")
            is_open = want_open
        script = tmp / f"upload-{number}.lua"
        prefix = f"rate{number}"
        script.write_text(INGEST_LUA.format(file=image, prefix=prefix, content_type=content_type))
        [(backlog,)] = query_database(
            database_url, "SELECT COUNT(*) FROM images_image WHERE NOT optimized"
        )
        watcher_cpu = watcher.call("collect", False)["cpu"]
        cpu, idle, wrk_cpu = cpu_seconds(server), idle_share(), children_cpu()
        up = wrk(server.url, args.seconds, args.connections, "-s", str(script))
        after_up = cpu_seconds(server)
        idle, wrk_cpu = idle_share(idle), children_cpu() - wrk_cpu
        used = {
            role: sum(after_up[role].values()) - sum(cpu.get(role, {}).values())
            for role in after_up
        }
        uploading = watcher.call("collect", False)  # (collect starts the counts again)
        watcher_cpu = uploading["cpu"] - watcher_cpu
        down = wrk(item, args.seconds, args.connections)
        after_down = cpu_seconds(server)
        split = [per_worker(cpu, after_up), per_worker(after_up, after_down)]
        uneven = [min(shares) < 0.25 * max(shares) for shares in split]
        for phase, figures in enumerate((up, down)):
            if not uneven[phase]:
                even[is_open][phase].append(figures["rps"])
        time.sleep(0.5)
        found = watcher.call("collect", False)
        [(stored,)] = query_database(
            database_url,
            "SELECT COUNT(*) FROM images_image WHERE device_id LIKE ?",
            (f"{prefix}-%",),
        )
        delivered = sum(
            part["sse_counts"].get(index, 0) for part in (uploading, found) for index in every
        )
        deliveries = f"{delivered}/{stored * len(every)}" if is_open else "-"
        print(
            f"{number + 1:>5} {'yes' if is_open else 'no':>4}"
            f" {'!' if uneven[0] else ''}{up['rps']:>{9 - uneven[0]}.1f} {up['p99']:>7.1f}"
            f" {'!' if uneven[1] else ''}{down['rps']:>{11 - uneven[1]}.1f} {down['p99']:>7.1f}"
            f" {up['errors'] + down['errors']:>6.0f} {deliveries:>18} {backlog:>7} {'':>6}"
            f" {'+'.join(f'{value:.1f}' for value in split[0]):>9} {used.get('events', 0):>8.1f}"
            f" {used.get('coap', 0):>5.1f} {used.get('optimizer', 0):>9.1f}"
            f" {watcher_cpu:>7.1f} {wrk_cpu:>4.1f} {idle:>4.0%}",
            flush=True,
        )
        if ended := uploading["ended"] + found["ended"]:
            print(f"      {ended} streams ended by the server during the round")
        results[is_open].append((up["rps"], down["rps"]))
    if is_open:
        close_all(watcher)
    if results[True] and results[False]:
        for name, average in (("mean", statistics.mean), ("median", statistics.median)):
            none, both = (
                [average(values) for values in zip(*results[state], strict=True)]
                for state in (False, True)
            )
            print(
                f"{name:>6}: none open: uploads {none[0]:.1f}/s, downloads {none[1]:.1f}/s;"
                f" {len(layout.paths)} streams + {len(layout.observing)} registrations open:"
                f" uploads {both[0]:.1f}/s, downloads {both[1]:.1f}/s;"
                f" open/none: uploads {both[0] / none[0]:.3f}, downloads {both[1] / none[1]:.3f}",
                flush=True,
            )
        ratios = []
        for phase, name in enumerate(("uploads", "downloads")):
            none, both = even[False][phase], even[True][phase]
            if none and both:
                ratios.append(
                    f"{name} {statistics.mean(both) / statistics.mean(none):.3f}"
                    f" ({len(both)} open and {len(none)} none)"
                )
        print(f"  mean of the rounds both workers served (no !): open/none: {', '.join(ratios)}")


def per_worker(
    before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]
) -> list[float]:
    """CPU seconds each HTTP worker used between two ``cpu_seconds`` readings."""
    workers, earlier = after.get("http", {}), before.get("http", {})
    return [workers[pid] - earlier.get(pid, 0.0) for pid in sorted(workers)] or [0.0]


def idle_share(since: tuple[int, int] | None = None) -> Any:
    """Idle and total CPU ticks so far (/proc/stat); given earlier ones, the idle share."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    now = (fields[3] + fields[4], sum(fields))  # idle + iowait, all
    if since is None:
        return now
    return (now[0] - since[0]) / max(1, now[1] - since[1])


@contextlib.contextmanager
def paused(pids: list[int]) -> Iterator[None]:
    """Stop these processes (SIGSTOP) for the duration; continue them after, whatever happens."""
    if pids:
        print(
            "the optimizer is paused during the rate rounds (--optimizer run to leave it):"
            " its backlog grows, and it takes no CPU from one round more than another",
            flush=True,
        )
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
