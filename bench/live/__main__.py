"""Live push under load: event streams and CoAP Observe next to uploads (prints figures).

    python -m bench.live [--streams 1000] [--observers 1000] [--uploads 50]
        [--interval 0.5] [--devices 5] [--all-share 0.1] [--per-socket 32] [--non]
        [--seconds 10] [--rounds 6] [--connections 4] [--rate-image PATH]
        [--workers 2] [--optimizer pause|run] [--quick]

Run from the repository root. Starts one ``manage.py serve`` (2 HTTP
workers, its event-stream listener, its CoAP endpoint and its optimizer, as
deployed) on a fresh database: SQLite, or a throwaway PostgreSQL one when
DATABASE_URL names PostgreSQL. A second
process (the watcher, one asyncio loop) holds the clients: ``--streams``
server-sent event streams on raw sockets (``--all-share`` of them on
``/events``, the rest spread over ``--devices`` devices'
``/devices/{id}/events``) and ``--observers`` CoAP Observe registrations of
those devices' ``/devices/{id}/images/latest``, hand-built GETs with Observe: 0
on UDP sockets, ``--per-socket`` registrations per socket (the server's cap
per client endpoint is 32), confirmable unless ``--non``; confirmable
notifications are acknowledged. Every arrival is stamped with ``time.time()``.
The upload driver is this process. Printed:

1. Latency from the ``201`` of an upload to its event on every stream that
   watches its device (or all devices) and to the Observe notification (matched
   by its ETag, the stored sha256's first 8 bytes) of every registration of that
   device: p50, p99 and max over ``--uploads`` uploads of a distinct 8x8 PNG,
   ``--interval`` seconds apart, round robin over the devices; and the
   deliveries missing. The latency includes the watcher's own delay in reading.
   Then the same for 20 uploads 0.25 s apart while wrk uploads to unwatched
   devices as fast as it is answered.
2. Memory: resident set of the stream listener's granian worker
   (``config.events:application``) and of ``runcoap`` before and after the
   streams and registrations are opened (after a small warm-up batch), so KiB
   per stream and per registration; and after they are closed again.
3. Upload and download rates with wrk (``--connections`` connections, 2
   threads, ``--seconds`` each): uploads of ``--rate-image`` (default a 32x32
   noise PNG: the request path, not image work) to devices nobody watches by
   device, then downloads of one stored image by id; in ``--rounds`` rounds,
   none open and all open in ABBA order (open, none, none, open, open, none),
   so that drift falls on both sides. While open, every upload is also an event
   on each ``/events`` stream: the deliveries are counted. Each round prints
   the CPU seconds during its uploads of serve's processes by role (each HTTP
   worker's apart), of the watcher (it shares the 2 cores with the server)
   and of wrk, the box's idle share, and the deferred optimizer's backlog. A
   rate is marked ``!`` when one HTTP worker sat idle through most of it:
   wrk's 4 keep-alive connections had all gone to the other (granian's
   workers take connections as they come), so it measured one worker; the
   last line gives the ratios without those rounds. The
   optimizer is paused (SIGSTOP) for the rate rounds unless ``--optimizer
   run``: running, it takes whatever CPU the servers leave idle, more in one
   round than another, which makes single rounds noisy (read the means).

At the end, the serve log's errors and warnings, if any. Nothing here asserts.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.live.clients import WatcherProcess
from bench.live.measure import PNG_NUMBERS, latency, open_all, print_memory, settle
from bench.live.rates import latency_under_load, paused, rates
from bench.live.server import Layout, Server, Stamps, memory, small_png
from bench.support import database_kind, fresh_database

FULL = {"streams": 1000, "observers": 1000, "uploads": 50, "seconds": 10, "rounds": 6}
QUICK = {"streams": 50, "observers": 50, "uploads": 10, "seconds": 3, "rounds": 2}
WARM_UP = 20  # streams and registrations opened and closed before memory is measured


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.live", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--streams", type=int, help=f"open event streams ({FULL['streams']})")
    parser.add_argument(
        "--observers", type=int, help=f"Observe registrations ({FULL['observers']})"
    )
    parser.add_argument("--uploads", type=int, help=f"uploads timed ({FULL['uploads']})")
    parser.add_argument("--seconds", type=int, help=f"each wrk run ({FULL['seconds']})")
    parser.add_argument("--rounds", type=int, help=f"rate rounds, open and not ({FULL['rounds']})")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between uploads")
    parser.add_argument("--devices", type=int, default=5, help="devices watched")
    parser.add_argument("--all-share", type=float, default=0.1, help="share of streams on /events")
    parser.add_argument("--per-socket", type=int, default=32, help="registrations per UDP socket")
    parser.add_argument("--non", action="store_true", help="non-confirmable registrations")
    parser.add_argument("--connections", type=int, default=4, help="wrk connections")
    parser.add_argument(
        "--rate-image",
        type=Path,
        help="PNG or JPEG for the rate rounds (default: a 32x32 noise PNG; a large one leaves"
        " the optimizer a backlog that competes for the CPU unevenly between rounds)",
    )
    parser.add_argument("--workers", type=int, default=2, help="serve's HTTP workers")
    parser.add_argument(
        "--optimizer",
        choices=("pause", "run"),
        default="pause",
        help="the deferred optimizer during the rate rounds (default: paused)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: " + " ".join(f"--{key} {value}" for key, value in QUICK.items()),
    )
    args = parser.parse_args()
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if shutil.which("wrk") is None:
        sys.exit("python -m bench.live needs wrk: apt-get install wrk")
    # Every stream is a socket here and in the listener (serve inherits this).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, 4 * (args.streams + args.observers) + 1024))
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))

    tmp = Path(tempfile.mkdtemp(prefix="bench-live-"))
    with fresh_database(tmp) as database_url:
        run(args, tmp, database_url)


def run(args: argparse.Namespace, tmp: Path, database_url: str) -> None:
    kind = database_kind(database_url)
    layout = Layout.make(args.streams, args.observers, args.devices, args.all_share)
    every = sum(device is None for device in layout.watched)
    print(
        f"database {kind}; serve with {args.workers} HTTP workers; {os.cpu_count()} cores;"
        f" {args.streams} event streams ({every} on /events, the rest on {args.devices} devices);"
        f" {args.observers} Observe registrations of those devices, {args.per_socket} per UDP"
        f" socket, {'non-' if args.non else ''}confirmable",
        flush=True,
    )
    server = Server(database_url, tmp, args.workers, args.observers)
    watcher = None
    stamps = Stamps()
    try:
        # Every observed device needs an image, or its registration is a 4.04.
        for device in layout.devices:
            server.upload(small_png(next(PNG_NUMBERS)), device, stamps())
        watcher = WatcherProcess("127.0.0.1", server.events_port, server.coap_port)
        warm = Layout.make(WARM_UP, WARM_UP, args.devices, args.all_share)
        watcher.call("open", warm.paths, warm.observed, args.per_socket, not args.non)
        settle(server, watcher, warm, stamps)
        watcher.call("close")
        time.sleep(1.0)

        before = memory(server)
        open_all(watcher, layout, args)
        after = memory(server)
        print_memory(before, after, len(layout.paths), len(layout.observing), "opened")
        settle(server, watcher, layout, stamps)
        print(
            f"latency from the 201 to the delivery: {args.uploads} uploads of an 8x8 PNG,"
            f" {args.interval} s apart, round robin over {args.devices} devices",
            flush=True,
        )
        latency(server, watcher, layout, args, stamps)
        if args.rounds:
            latency_under_load(server, watcher, layout, args, stamps, tmp)
            optimizer = server.processes().get("optimizer", [])
            with paused(optimizer if args.optimizer == "pause" else []):
                rates(server, watcher, layout, args, tmp, database_url)
    finally:
        if watcher is not None:
            watcher.stop()
        server.stop()  # first: what it logs while stopping counts too
        problems = server.log_problems()
    if problems:
        print(f"serve log ({server.log_path}), errors and warnings:")
        for line, count in problems.most_common(12):
            print(f"  {count:6d} x {line[:160]}")
    else:
        print(f"serve log ({server.log_path}): no errors or warnings")


if __name__ == "__main__":
    main()
