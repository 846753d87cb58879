"""Phase 1 of ``python -m bench.sidebyside``: downloads of one stored image, alternating."""

from __future__ import annotations

import statistics
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from bench.sidebyside.machine import machine_cpu, settle, wrk
from bench.sidebyside.servers import (
    DOWNLOAD_PATH,
    PUBLISHED,
    Server,
    start_ours_gunicorn,
    start_ours_serve,
    start_prototype,
    start_s3,
    store_our_image,
    store_prototype_image,
)
from bench.support import CORPUS, children_cpu


@dataclass
class Measured:
    rps: float
    errors: int
    server_us: float  # the server's CPU per request
    other_cores: float  # busy cores that were neither the server nor wrk


def measure(server: Server, seconds: float) -> Measured:
    """One wrk run on the download URL, and where the machine's CPU went meanwhile."""
    machine, own, load = machine_cpu(), server.cpu(), children_cpu()
    started = time.monotonic()
    result = wrk(server.base + DOWNLOAD_PATH, seconds)
    elapsed = time.monotonic() - started
    own = server.cpu() - own
    other = machine_cpu() - machine - own - (children_cpu() - load)
    return Measured(
        rps=result.rps,
        errors=result.errors,
        server_us=own / max(result.requests, 1) * 1e6,
        other_cores=max(other, 0.0) / elapsed,
    )


def download(tmp: Path, seconds: float, rounds: int, patience: float) -> None:
    print(f"machine busy before the download phase: {settle(patience):.2f} cores", flush=True)
    image = (CORPUS / "skimage__brick.png").read_bytes()
    with ExitStack() as stack:
        prototype = start_prototype(
            stack, tmp / "dl-prototype", "prototype (gunicorn, 2 sync)", "brief"
        )
        store_prototype_image(prototype, image)
        serve = start_ours_serve(stack, tmp / "dl-serve", "ours, serve (granian, 2)")
        store_our_image(serve, image)
        gunicorn = start_ours_gunicorn(stack, tmp / "dl-gunicorn", "ours, gunicorn (2 sync)")
        store_our_image(gunicorn, image)
        s3_env, weed = start_s3(stack, tmp / "dl-weed")
        s3 = start_ours_serve(stack, tmp / "dl-serve-s3", "ours, serve, bytes in S3", s3_env)
        s3.also_cost.append(weed)
        store_our_image(s3, image)
        servers = [prototype, serve, gunicorn, s3]
        for server in servers:  # warm-up: imports, connections, caches
            measure(server, 2)
        runs: dict[str, list[Measured]] = {s.name: [] for s in servers}
        failed: dict[str, int] = {s.name: 0 for s in servers}
        for _ in range(rounds):
            for server in servers:
                settle(patience)
                try:
                    runs[server.name].append(measure(server, seconds))
                except RuntimeError as error:  # one lost run should not lose the others
                    print(error, file=sys.stderr)
                    failed[server.name] += 1
    print(
        f"\nDownload of one stored brick.png by deviceId+timestamp, wrk c4, {seconds:.0f} s x "
        f"{rounds} rounds, alternating (published prototype figure: "
        f"{PUBLISHED['download req/s']:,.0f} req/s)"
    )
    rounds_head = " ".join(f"{'round ' + str(n + 1):>9}" for n in range(rounds))
    print(
        f"{'server':<30} {rounds_head} {'median':>9} {'ours/proto':>10} {'/published':>10} "
        f"{'CPU us/req':>10} {'other cores':>11}"
    )
    reference = statistics.median(m.rps for m in runs[servers[0].name] or [float("nan")])
    for server in servers:
        measured = runs[server.name]
        if not measured:
            print(f"{server.name:<30} every run failed")
            continue
        median = statistics.median(m.rps for m in measured)
        errors = sum(m.errors for m in measured)
        notes = [f"{errors} errors"] if errors else []
        notes += [f"{failed[server.name]} runs failed"] if failed[server.name] else []
        cells = " ".join(f"{m.rps:9.1f}" for m in measured).ljust(10 * rounds - 1)
        print(
            f"{server.name:<30} {cells} {median:9.1f} {median / reference:9.2f}x "
            f"{median / PUBLISHED['download req/s']:9.2f}x "
            f"{statistics.median(m.server_us for m in measured):10.0f} "
            f"{max(m.other_cores for m in measured):11.2f}"
            + (f"  ({', '.join(notes)})" if notes else ""),
            flush=True,
        )
    print(
        "ours/proto: over the stand-in's median; /published: over the prototype's published "
        f"{PUBLISHED['download req/s']:,.0f} req/s. CPU us/req: the server's process tree per "
        "request (SeaweedFS included for S3). other cores: the most, over the rounds, busy "
        "with neither that server nor wrk (the idle servers included)"
    )
