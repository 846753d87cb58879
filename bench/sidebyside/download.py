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


@dataclass
class Row:
    """One line of the table: a server and the URL path it is measured on."""

    name: str
    server: Server
    path: str


def measure(row: Row, seconds: float) -> Measured:
    """One wrk run on the row's URL, and where the machine's CPU went meanwhile."""
    server = row.server
    machine, own, load = machine_cpu(), server.cpu(), children_cpu()
    started = time.monotonic()
    result = wrk(server.base + row.path, seconds)
    elapsed = time.monotonic() - started
    own = server.cpu() - own
    other = machine_cpu() - machine - own - (children_cpu() - load)
    return Measured(
        rps=result.rps,
        errors=result.errors,
        server_us=own / max(result.requests, 1) * 1e6,
        other_cores=max(other, 0.0) / elapsed,
    )


def ours(server: Server, image: bytes, by_id: bool) -> list[Row]:
    """The image stored on one of our servers; its rows (by key, and by id if asked)."""
    href = store_our_image(server, image)
    rows = [Row(f"{server.name}, by key" if by_id else server.name, server, DOWNLOAD_PATH)]
    if by_id:
        rows.append(Row(f"{server.name}, by id", server, href))
    return rows


def start_servers(
    stack: ExitStack, tmp: Path, by_id: bool, serve_only: bool, also: dict[str, Path]
) -> list[Row]:
    """Every server measured, each given the brick; the table's rows, the prototype's first."""
    image = (CORPUS / "skimage__brick.png").read_bytes()
    prototype = start_prototype(
        stack, tmp / "dl-prototype", "prototype (gunicorn, 2 sync)", "brief"
    )
    store_prototype_image(prototype, image)
    rows = [Row(prototype.name, prototype, DOWNLOAD_PATH)]
    serve = start_ours_serve(stack, tmp / "dl-serve", "ours, serve (granian, 2)")
    rows += ours(serve, image, by_id)
    for label, root in also.items():
        other = start_ours_serve(stack, tmp / f"dl-also-{label}", f"{label}, serve", root=root)
        rows += ours(other, image, by_id)
    if serve_only:
        return rows
    gunicorn = start_ours_gunicorn(stack, tmp / "dl-gunicorn", "ours, gunicorn (2 sync)")
    rows += ours(gunicorn, image, by_id)
    s3_env, weed = start_s3(stack, tmp / "dl-weed")
    s3 = start_ours_serve(stack, tmp / "dl-serve-s3", "ours, serve, bytes in S3", s3_env)
    s3.also_cost.append(weed)
    rows += ours(s3, image, by_id)
    return rows


def download(
    tmp: Path,
    seconds: float,
    rounds: int,
    patience: float,
    *,
    by_id: bool = False,
    serve_only: bool = False,
    also: dict[str, Path] | None = None,
) -> None:
    print(f"machine busy before the download phase: {settle(patience):.2f} cores", flush=True)
    with ExitStack() as stack:
        rows = start_servers(stack, tmp, by_id, serve_only, also or {})
        for row in rows:  # warm-up: imports, connections, caches
            measure(row, 2)
        runs: dict[str, list[Measured]] = {row.name: [] for row in rows}
        failed: dict[str, int] = {row.name: 0 for row in rows}
        for _ in range(rounds):
            for row in rows:
                settle(patience)
                try:
                    runs[row.name].append(measure(row, seconds))
                except RuntimeError as error:  # one lost run should not lose the others
                    print(error, file=sys.stderr)
                    failed[row.name] += 1
    print_table(rows, runs, failed, seconds, rounds, by_id)


def print_table(
    rows: list[Row],
    runs: dict[str, list[Measured]],
    failed: dict[str, int],
    seconds: float,
    rounds: int,
    by_id: bool,
) -> None:
    what = "by deviceId+timestamp" + (" (the prototype's URL) and by id" if by_id else "")
    print(
        f"\nDownload of one stored brick.png {what}, wrk c4, {seconds:.0f} s x "
        f"{rounds} rounds, alternating (published prototype figure: "
        f"{PUBLISHED['download req/s']:,.0f} req/s)"
    )
    rounds_head = " ".join(f"{'round ' + str(n + 1):>9}" for n in range(rounds))
    width = max(30, *(len(row.name) for row in rows))
    print(
        f"{'server':<{width}} {rounds_head} {'median':>9} {'ours/proto':>10} {'/published':>10} "
        f"{'CPU us/req':>10} {'other cores':>11}"
    )
    reference = statistics.median(m.rps for m in runs[rows[0].name] or [float("nan")])
    for row in rows:
        measured = runs[row.name]
        if not measured:
            print(f"{row.name:<{width}} every run failed")
            continue
        median = statistics.median(m.rps for m in measured)
        errors = sum(m.errors for m in measured)
        notes = [f"{errors} errors"] if errors else []
        notes += [f"{failed[row.name]} runs failed"] if failed[row.name] else []
        cells = " ".join(f"{m.rps:9.1f}" for m in measured).ljust(10 * rounds - 1)
        print(
            f"{row.name:<{width}} {cells} {median:9.1f} {median / reference:9.2f}x "
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
