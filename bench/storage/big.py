"""The 30 MB cases of ``python -m bench.storage``, each in a child process of its own.

So that its peak RSS (VmHWM, reset after a warm-up) is that operation's alone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.storage import run_child
from bench.storage.clients import BUCKET, CLIENTS, PIECE, RequestCounter, make_client, make_storage
from bench.storage.figures import Samples, timed
from bench.support import reset_peak, status_kib


def drain(pieces: Any, started: float, first_piece: list[float]) -> int:
    """Bytes in ``pieces``; appends the seconds from ``started`` to the first piece."""
    total = 0
    for piece in pieces:
        if not total:
            first_piece.append(time.perf_counter() - started)
        total += len(piece)
    return total


def big_operation(
    case: str, name: str, endpoint: str, source: Path, first_piece: list[float]
) -> tuple[Callable[[int], Any], RequestCounter]:
    """The ``put`` (of the file ``source``) or ``stream`` operation of one client."""
    if name == "boto3":
        client = make_client(endpoint)

        def put(i: int) -> None:
            with open(source, "rb") as body:
                client.put_object(Bucket=BUCKET, Key=f"big/b/{i}", Body=body)

        def stream(_: int) -> int:
            started = time.perf_counter()
            body = client.get_object(Bucket=BUCKET, Key="big/read")["Body"]
            return drain(body.iter_chunks(PIECE), started, first_piece)

        counter = RequestCounter(client)
    else:
        from django.core.files import File

        storage = make_storage(endpoint)

        def put(i: int) -> None:
            with open(source, "rb") as body:
                storage.save(f"big/s/{i}", File(body))

        def stream(_: int) -> int:
            started = time.perf_counter()
            # File.chunks(): Django's way to iterate a stored file in pieces.
            with storage.open("big/read", "rb") as file:
                return drain(file.chunks(PIECE), started, first_piece)

        counter = RequestCounter(storage.connection.meta.client)
    return (put if case == "put" else stream), counter


def child(case: str, name: str, endpoint: str, source: Path, iterations: int) -> None:
    """One client, one 30 MB case, in this process alone: prints its figures as JSON."""
    first_piece: list[float] = []
    operation, counter = big_operation(case, name, endpoint, source, first_piece)
    operation(-1)  # warm-up: connections, lazily imported modules, botocore's models
    first_piece.clear()
    baseline = status_kib("self")
    exact = reset_peak()
    before = counter.count
    figures = timed(operation, iterations)
    figures["requests"] = counter.count - before
    figures["extra"] = {
        "peak_growth_mib": [(status_kib("self", "VmHWM") - baseline) / 1024],
        "first_piece": first_piece,
        "exact_peak": [exact],
    }
    print(json.dumps(figures))


def measure_big(
    endpoint: str, source: Path, rounds: int, iterations: int
) -> dict[tuple[str, str], Samples]:
    results: dict[tuple[str, str], Samples] = {}
    for number in range(rounds):
        order = CLIENTS if number % 2 == 0 else CLIENTS[::-1]
        for case in ("put", "stream"):
            for name in order:
                out = run_child(case, name, endpoint, str(source), str(iterations))
                results.setdefault((case, name), Samples()).add(json.loads(out))
    return results
