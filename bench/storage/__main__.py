"""Which S3 client the storage seam should use: boto3's client or django-storages, measured.

    python -m bench.storage [--rounds 10] [--iterations 20] [--big-rounds 4]
        [--big-iterations 2] [--clients 20]

Run from the repository root. Starts a local S3 gateway (SeaweedFS,
``ops.seaweedfs``) in a temporary directory and measures, side by side, a
boto3 client (one botocore ``Config``: a connection pool, two attempts in
standard retry mode, short timeouts) and django-storages' ``S3Storage`` given
the same ``Config``:

- put, get whole, ranged get (bytes=1000-1999) and head (size, existence) of a
  100 KB object: interleaved rounds in this process, the two clients taking
  turns (their order swapped every round); median and p90 wall time, CPU time
  per operation (``time.process_time``, every thread of the process) and HTTP
  requests sent per operation;
- put of a 30 MB file and streaming a 30 MB object in 64 KiB pieces: each run
  in a child process of its own, so that its peak RSS (VmHWM, reset after a
  warm-up) is that operation's alone; for streaming, also the time to the
  first piece.

Then the cost of creating a boto3 client (in a fresh process), one client
shared by threads, and what the store answers where a backend must know:
errors for a missing key or bucket, ranges, ETags and checksums.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import boto3

from bench.storage.behaviour import behaviour
from bench.storage.big import child, measure_big
from bench.storage.clients import BIG, BUCKET, PIECE, SMALL, make_client
from bench.storage.creation import creation, creation_child
from bench.storage.figures import table
from bench.storage.small import measure_small
from bench.storage.threads import threads
from ops.seaweedfs import ObjectStore, weed_binary


def run(args: argparse.Namespace, endpoint: str, directory: Path) -> None:
    import django
    import storages

    client = make_client(endpoint)
    client.create_bucket(Bucket=BUCKET)
    data = random.Random(1).randbytes(SMALL)
    source = directory / "big.bin"
    source.write_bytes(random.Random(3).randbytes(BIG))
    with open(source, "rb") as body:
        client.put_object(Bucket=BUCKET, Key="big/read", Body=body)
    weed = subprocess.run([weed_binary(), "version"], capture_output=True, text=True).stdout
    print(
        f"store: SeaweedFS {weed.split()[2] if weed else '?'} on loopback;"
        f" boto3 {boto3.__version__},"
        f" django-storages {storages.__version__} (Django {django.get_version()});"
        f" {os.cpu_count()} cores"
    )
    print(
        f"\n100 KB object: {args.rounds} rounds x {args.iterations} iterations per client,"
        " interleaved; CPU includes every thread of this process"
    )
    table(measure_small(endpoint, data, args.rounds, args.iterations), big=False)

    print(
        f"\n30 MB: {args.big_rounds} child processes x {args.big_iterations} iterations per"
        f" client and case; streaming in {PIECE // 1024} KiB pieces; peak RSS growth = VmHWM"
        " after minus RSS before (max over children)"
    )
    names = {"put": "put 30 MB (from a file)", "stream": "stream 30 MB"}
    big = measure_big(endpoint, source, args.big_rounds, args.big_iterations)
    table({(names[case], name): samples for (case, name), samples in big.items()}, big=True)

    print(f"\nclient creation (a fresh process; median of {args.clients}):")
    for label, values in creation(endpoint, args.clients).items():
        unit = "MiB" if "RSS" in label else "ms"
        value = statistics.median(values) if isinstance(values, list) else values
        print(f"  {label:56} {value if unit == 'MiB' else value * 1000:8.2f} {unit}")

    print("\nthreads sharing one client (100 KB gets, every body's SHA-256 checked):")
    objects = {f"threads/{n}": random.Random(n).randbytes(SMALL) for n in range(32)}
    for key, body in objects.items():
        client.put_object(Bucket=BUCKET, Key=key, Body=body)
    for line in threads(endpoint, objects):
        print(line)

    print("\nwhat SeaweedFS answers (status and error code):")
    for line in behaviour(endpoint, data):
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.storage", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=20, help="per client and round")
    parser.add_argument("--big-rounds", type=int, default=4, help="child processes per 30 MB case")
    parser.add_argument("--big-iterations", type=int, default=2, help="per child process")
    parser.add_argument("--clients", type=int, default=20, help="clients created per way")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        case, name, endpoint, source, iterations = args.child
        if case == "creation":
            creation_child(endpoint, int(iterations))
        else:
            child(case, name, endpoint, Path(source), int(iterations))
        return
    if importlib.util.find_spec("storages") is None:  # not a dependency of the service
        sys.exit("bench.storage compares with django-storages: pip install django-storages")
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as directory:
        store = ObjectStore(Path(directory) / "store")
        try:
            store.wait()
            run(args, store.endpoint_url, Path(directory))
        finally:
            store.stop()


if __name__ == "__main__":
    main()
