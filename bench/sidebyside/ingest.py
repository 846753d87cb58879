"""Phase 2 of ``python -m bench.sidebyside``: ingest end to end, the prototype's and ours."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench import sustained
from bench.sidebyside.machine import machine_cpu, settle, wrk
from bench.sidebyside.servers import PUBLISHED, start_prototype
from bench.support import CORPUS, WRK_THREADS_LUA, children_cpu, query_database
from bench.sustained import LAG_BOUND, one_run

IMAGES = ("skimage__brick.png", "sklearn__china.jpg")
TARGET_CPU_MS = {"skimage__brick.png": 200.0, "sklearn__china.jpg": 52.0}

PROTOTYPE_INGEST_LUA = (
    """
local data = io.open("{file}", "rb"):read("*all")"""
    + WRK_THREADS_LUA
    + """function request()
  counter = counter + 1
  local body = string.format('{{"deviceId":"{prefix}-%d",' ..
    '"timestamp":"2024-01-01T00:00:00.%06dZ","imageData":"', tid, counter)
  return wrk.format("POST", "/collections/images", {{["Content-Type"] = "application/json"}},
    body .. data .. '"}}')
end
"""
)


@dataclass
class PrototypeIngest:
    rate: float
    cpu_ms: float
    stored: int
    errors: int
    other_cores: float
    busy_before: float


def prototype_ingest(
    tmp: Path, calibration: str, seconds: float, patience: float, images: tuple[str, ...]
) -> dict[str, PrototypeIngest]:
    """Closed loop at c4: each image in turn for ``seconds``, JSON with base64, unique keys."""
    found = {}
    with ExitStack() as stack:
        directory = tmp / f"in-prototype-{calibration}"
        server = start_prototype(stack, directory, "prototype", calibration)
        for name in images:
            encoded = tmp / f"{name}.b64"
            encoded.write_bytes(base64.b64encode((CORPUS / name).read_bytes()))
            script = tmp / f"{name}.lua"
            prefix = f"{calibration}-{name}"
            script.write_text(PROTOTYPE_INGEST_LUA.format(file=encoded, prefix=prefix))
            busy_before = settle(patience)
            machine, own, load = machine_cpu(), server.cpu(), children_cpu()
            result = wrk(server.base + "/collections/images", seconds, "-s", str(script))
            own = server.cpu() - own
            other = machine_cpu() - machine - own - (children_cpu() - load)
            stored = query_database(
                f"sqlite:///{directory / 'prototype.sqlite3'}",
                "SELECT count(*) FROM prototype_image WHERE device_id LIKE ?",
                (prefix + "-%",),
            )[0][0]
            found[name] = PrototypeIngest(
                rate=(result.requests - result.errors) / seconds,
                cpu_ms=own / max(result.requests, 1) * 1000,
                stored=stored,
                errors=result.errors,
                other_cores=max(other, 0.0) / seconds,
                busy_before=busy_before,
            )
    return found


def ingest(
    tmp: Path,
    seconds: float,
    factor: float,
    optimizers: int,
    calibrations: list[str],
    patience: float,
    images: tuple[str, ...] = IMAGES,
) -> None:
    prototype = {c: prototype_ingest(tmp, c, seconds, patience, images) for c in calibrations}
    print(
        f"\nIngest, prototype (inline, accepted == done): closed loop, wrk c4, JSON base64, "
        f"unique keys, {seconds:.0f} s per image (published: brick "
        f"{PUBLISHED['ingest brick req/s']} req/s)"
    )
    print(
        f"{'image':<20} {'calibration':<12} {'req/s':>7} {'CPU ms/upload':>13} "
        f"{'target ms':>9} {'stored':>7} {'busy before':>11} {'other cores':>11}"
    )
    for calibration, figures in prototype.items():
        for name, run in figures.items():
            target = f"{TARGET_CPU_MS[name]:9.0f}" if calibration == "brief" else f"{'':9}"
            print(
                f"{name:<20} {calibration:<12} {run.rate:7.1f} {run.cpu_ms:13.1f} {target} "
                f"{run.stored:7d} {run.busy_before:11.2f} {run.other_cores:11.2f}"
                + (f"  ({run.errors} errors)" if run.errors else ""),
                flush=True,
            )
    print(
        f"\nIngest, ours end to end (bench.sustained.one_run: serve, 2 workers, {optimizers} "
        f"optimizer(s), raw bodies, open loop at {factor:g}x the highest prototype rate), "
        f"{seconds:.0f} s per image"
    )
    print(
        f"{'image':<20} {'offered/s':>9} {'offer s':>7} {'accepted/s':>10} {'optimized/s':>11} "
        f"{'max lag s':>9} {'end lag s':>9} {'backlog':>7} {'drain s':>7} {'ratio':>6} "
        f"{'bounded':>7} {'e2e/s':>6} {'CPU ms/img':>10} {'busy before':>11}"
    )
    ratios = []
    brick = None
    longest = 0.0
    for name in images:
        rate = factor * max(figures[name].rate for figures in prototype.values())
        busy_before = settle(patience)
        durations: list[float] = []
        with offer_timed(durations):
            run = one_run(CORPUS / name, rate, optimizers, seconds, {})
        took = max(durations[0], seconds)
        longest = max(longest, took)
        accepted, optimized = run.accepted / took, run.optimized_during / took
        e2e, cpu_ms = run.e2e_rate(took), run.cpu_ms(run.cpu_final)
        if name == IMAGES[0]:
            brick = accepted, optimized, e2e
        print(
            f"{name:<20} {rate:9.1f} {took:7.1f} {accepted:10.1f} {optimized:11.1f} "
            f"{run.max_lag:9.1f} {run.lag_at_end:9.1f} {run.backlog_at_end:7.0f} "
            f"{run.drain_seconds:7.1f} {run.ratios['all']:6.4f} "
            f"{'yes' if run.bounded else 'no':>7} {e2e:6.1f} {cpu_ms:10.1f} {busy_before:11.2f}"
            + (f"  ({run.errors} errors)" if run.errors else ""),
            flush=True,
        )
        for calibration, figures in prototype.items():
            reference = figures[name].rate
            ratios.append(
                f"{name:<20} {calibration:<12} {reference:10.1f} "
                f"{accepted / reference:12.2f}x {optimized / reference:13.2f}x "
                f"{e2e / reference:8.2f}x"
            )
    print("\nIngest, ours / prototype (accepted/s and optimized/s over the prototype's req/s)")
    print(
        f"{'image':<20} {'calibration':<12} {'proto/s':>10} {'accepted/p':>13} "
        f"{'optimized/p':>14} {'e2e/p':>9}"
    )
    print("\n".join(ratios))
    if brick is not None:
        published = PUBLISHED["ingest brick req/s"]
        print(
            f"{IMAGES[0]:<20} {'published':<12} {published:10.1f} "
            f"{brick[0] / published:12.2f}x {brick[1] / published:13.2f}x "
            f"{brick[2] / published:8.2f}x"
        )
    print(
        "offer s: how long the open-loop offer really took (over the nominal seconds when "
        "the server fell behind); accepted/s and optimized/s are over it. bounded: "
        f"bench.sustained's verdict (lag at the end of the offer <= {LAG_BOUND} s); "
        "ratio: its bytes at rest / bytes received, all images, after the drain; e2e/s: "
        "accepted images over the offer plus the time until every served byte was final; "
        "CPU ms/img: the server's (serve and its workers) over that time, all work, per image"
    )
    if longest < LAG_BOUND:
        print(
            f"(offers under {LAG_BOUND} s cannot build a lag past the {LAG_BOUND} s bound: "
            "use --ingest-seconds 180 for the goals)"
        )


@contextmanager
def offer_timed(durations: list[float]) -> Iterator[None]:
    """Record how long one_run's open-loop offer really took.

    one_run divides by the nominal seconds; when the server (or its Python
    client) falls behind the offered rate, the offer runs longer than that and
    the nominal rate overstates what was accepted.
    """
    original = sustained.offer

    def offer(*args: object) -> None:
        started = time.monotonic()
        try:
            original(*args)
        finally:
            durations.append(time.monotonic() - started)

    sustained.offer = offer
    try:
        yield
    finally:
        sustained.offer = original
