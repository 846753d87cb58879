"""Downloads and uploads beside event streams on the API port, by ``serve --api-streams``.

    python -m bench.live.api_port [--configs 0,64] [--rounds 12] [--seconds 4]
        [--connections 4] [--kinds download,upload] [--open 0] [--workers 2]

Run from the repository root (prints figures; nothing here asserts).
Starts one ``manage.py serve`` per value of ``--configs`` (its
``--api-streams``; 0 is the service as it was before streams were served on
the API port) on one fresh database, all at once, with the optimizer off
(``--optimizers 0``, ``IMAGES_OPTIMIZE=deferred``: the request path, not
image work), stores one image (``skimage__brick.png``), then measures with
wrk, round after round, each round over every server in a rotated order so
that drift on the shared machine falls on all of them alike: downloads of
that image by id, and uploads of it (unique device and timestamp each).
With ``--open N``, N event streams (``/events``, plain sockets, read all
along) stay open on each server: on its API port, or with ``--api-streams
0`` on its stream listener, as before; an upload between rounds checks that
every stream still delivers.

Printed for each run: requests/s, p99, and the CPU time per request of the
HTTP workers and of all of serve's processes (utime + stime from /proc: less
noisy than rates when others share the machine); then each server against
the first, as the median of the rounds' ratios; then medians, ranges and
each HTTP worker's thread count at the end.
"""

from __future__ import annotations

import argparse
import json
import re
import selectors
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from bench.support import (
    CORPUS,
    INGEST_LUA,
    children,
    cmdline,
    free_port,
    fresh_database,
    process_cpu,
    serve_env,
    start_serve,
    stop,
    tree_cpu,
    wrk,
)

ID = re.compile(rb"\nid: ([0-9a-f-]{36})\n")


def status_threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


class Server:
    def __init__(self, database_url: str, tmp: Path, config: str, workers: int) -> None:
        self.name = config
        api_streams = int(config)
        self.api_streams = api_streams
        self.port, self.events_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = start_serve(
            tmp / f"serve-{config}.log",
            serve_env(
                database_url,
                IMAGES_OPTIMIZE="deferred",
                IMAGES_EVENTS_PER_CLIENT="10000",  # every stream comes from this one address
            ),
            self.port,
            workers,
            *("--coap-port", "0", "--optimizers", "0", "--events-port", str(self.events_port)),
            *("--api-streams", str(api_streams)),
            new_session=True,
        )
        self.streams: list[socket.socket] = []
        self.seen: list[set[bytes]] = []

    def http_workers(self) -> list[int]:
        """The granian WSGI workers (children of the granian process serving config.wsgi)."""
        for child in children(self.process.pid):
            if "config.wsgi" in cmdline(child):
                return children(child)
        return []

    def open_streams(self, count: int, port: int) -> None:
        """``count`` streams on ``/events``, read all along by one thread (as live clients do)."""
        for _ in range(count):
            stream = socket.create_connection(("127.0.0.1", port), timeout=30)
            stream.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            head = stream.recv(4096)
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"a stream on {self.url} answered {head[:60]!r}")
            stream.setblocking(False)
            self.streams.append(stream)
            self.seen.append(set())
        if count:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        selector = selectors.DefaultSelector()
        tails = [b""] * len(self.streams)
        for index, stream in enumerate(self.streams):
            selector.register(stream, selectors.EVENT_READ, index)
        while True:
            for key, _ in selector.select():
                index = key.data
                try:
                    data = key.fileobj.recv(65536)
                except BlockingIOError:
                    continue
                if not data:
                    selector.unregister(key.fileobj)
                    continue
                text = tails[index] + data
                self.seen[index].update(ID.findall(text))
                tails[index] = text[-64:]

    def streams_heard(self, image_id: str) -> int:
        """How many open streams delivered ``image_id`` (waiting up to 5 s)."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            heard = sum(image_id.encode() in seen for seen in self.seen)
            if heard == len(self.seen):
                break
            time.sleep(0.1)
        return heard


def upload(url: str, body: bytes, device: str, second: int) -> dict:
    request = urllib.request.Request(
        f"{url}/collections/images?deviceId={device}&timestamp=2024-01-01T00:00:{second:02d}Z",
        data=body,
        method="POST",
        headers={"Content-Type": "image/png", "Accept": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="0,64")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--connections", default="4")
    parser.add_argument("--open", type=int, default=0, help="streams held open on each server")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--kinds", default="download,upload", help="download, upload (comma-separated)"
    )
    args = parser.parse_args()
    configs = args.configs.split(",")
    concurrencies = [int(value) for value in args.connections.split(",")]
    with tempfile.TemporaryDirectory() as tmp, fresh_database(Path(tmp)) as database_url:
        args.tmp = tmp
        servers = [Server(database_url, Path(tmp), c, args.workers) for c in configs]
        try:
            run(servers, args, concurrencies)
        finally:
            for server in servers:
                stop(server.process, timeout=60)


def run(servers: list[Server], args: argparse.Namespace, concurrencies: list[int]) -> None:
    brick = (CORPUS / "skimage__brick.png").read_bytes()
    stored = upload(servers[0].url, brick, "dl", 0)
    for server in servers:
        # --api-streams 0: the API port holds none; they go to the listener, as before.
        server.open_streams(args.open, server.port if server.api_streams else server.events_port)
    print(f"{len(servers)} servers, {args.workers} workers each, {args.open} streams open on each")
    rates: dict[tuple[str, str, int], list[float]] = {}
    costs: dict[tuple[str, str, int], list[float]] = {}
    totals: dict[tuple[str, str, int], list[float]] = {}
    kinds = args.kinds.split(",")
    for round_ in range(args.rounds):
        order = servers[round_ % len(servers) :] + servers[: round_ % len(servers)]
        for server in order:
            for kind in kinds:
                for connections in concurrencies:
                    workers = server.http_workers()
                    cpu = sum(process_cpu(pid) for pid in workers)
                    everything = tree_cpu(server.process.pid)
                    if kind == "download":
                        figures = wrk(f"{server.url}{stored['href']}", args.seconds, connections)
                    else:
                        script = Path(args.tmp) / f"up-{server.name}-{round_}-{connections}.lua"
                        script.write_text(
                            INGEST_LUA.format(
                                file=CORPUS / "skimage__brick.png",
                                prefix=f"up-{server.name}-{round_}-{connections}",
                                content_type="image/png",
                            )
                        )
                        figures = wrk(server.url, args.seconds, connections, "-s", str(script))
                    cpu = sum(process_cpu(pid) for pid in workers) - cpu
                    everything = tree_cpu(server.process.pid) - everything
                    key = (kind, server.name, connections)
                    rates.setdefault(key, []).append(figures["rps"])
                    costs.setdefault(key, []).append(cpu / figures["requests"] * 1e6)
                    totals.setdefault(key, []).append(everything / figures["requests"] * 1e6)
                    print(
                        f"round {round_ + 1} {kind:<8} --api-streams {server.name:>4}"
                        f" c{connections:<3} {figures['rps']:>8.0f} req/s"
                        f"  p99 {figures['p99']:>7.2f} ms"
                        f"  errors {figures['errors'] + figures['socket_errors']:.0f}"
                        f"  CPU per request: workers {costs[key][-1]:.0f} µs,"
                        f" all of serve {totals[key][-1]:.0f} µs",
                        flush=True,
                    )
        if args.open:
            check = upload(servers[0].url, brick, "dl", round_ + 1)
            heard = [server.streams_heard(check["id"]) for server in servers if server.streams]
            print(f"round {round_ + 1}: an upload's event heard by {heard} of {args.open} streams")
    print()
    print_ratios(servers, rates, costs, totals)
    for server in servers:
        threads = [status_threads(pid) for pid in server.http_workers()]
        for (kind, streams, connections), values in rates.items():
            if streams != server.name:
                continue
            print(
                f"{kind:<8} --api-streams {streams:>4}"
                f" c{connections:<3} median {statistics.median(values):>7.0f} req/s"
                f"  range {min(values):.0f}–{max(values):.0f}"
                f"  CPU median {statistics.median(costs[(kind, streams, connections)]):.0f} µs"
                f"  worker threads {threads}"
            )


def print_ratios(servers: list[Server], rates: dict, costs: dict, totals: dict) -> None:
    """Each server against the first, round by round (the same minutes of the shared machine)."""
    first = servers[0].name
    for (kind, name, connections), values in rates.items():
        if name == first:
            continue
        base = rates[(kind, first, connections)]
        base_cost = costs[(kind, first, connections)]
        rate = statistics.median(v / b for v, b in zip(values, base, strict=True))
        cost = statistics.median(
            c / b for c, b in zip(costs[(kind, name, connections)], base_cost, strict=True)
        )
        total = statistics.median(
            c / b
            for c, b in zip(
                totals[(kind, name, connections)], totals[(kind, first, connections)], strict=True
            )
        )
        print(
            f"{kind:<8} --api-streams {name:>4} c{connections:<3} against {first}, median of"
            f" the rounds' ratios: rate x{rate:.2f}, CPU per request: workers x{cost:.2f},"
            f" all of serve x{total:.2f}"
        )


if __name__ == "__main__":
    sys.exit(main())
