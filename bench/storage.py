"""Which S3 client the storage seam should use: boto3's client or django-storages, measured.

    python bench/storage.py [--rounds 10] [--iterations 20] [--big-rounds 4]
        [--big-iterations 2] [--clients 20]

Starts a local S3 gateway (SeaweedFS, ``ops.objectstore``) in a temporary
directory and measures, side by side, a boto3 client (one botocore ``Config``:
a connection pool, two attempts in standard retry mode, short timeouts) and
django-storages' ``S3Storage`` given the same ``Config``:

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

import sys
from pathlib import Path

# bench/http.py would shadow the standard library's ``http`` (botocore needs it).
ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)

import argparse  # noqa: E402
import base64  # noqa: E402
import gc  # noqa: E402
import hashlib  # noqa: E402
import importlib.util  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from functools import partial  # noqa: E402
from typing import Any  # noqa: E402

import boto3  # noqa: E402
from boto3.s3.transfer import TransferConfig  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

from ops.objectstore import CREDENTIALS, ObjectStore, weed_binary  # noqa: E402

BUCKET = "bench-storage"
REGION = "us-east-1"
SMALL = 100_000
BIG = 30_000_000
PIECE = 64 * 1024
RANGE = "bytes=1000-1999"
POOL = 16
CLIENTS = ("boto3", "storages")


def client_config(pool: int = POOL) -> Config:
    """What the service would run with: fail fast, retry once, keep connections."""
    return Config(
        region_name=REGION,
        max_pool_connections=pool,
        retries={"max_attempts": 2, "mode": "standard"},
        connect_timeout=2,
        read_timeout=10,
        s3={"addressing_style": "path"},
    )


def make_client(endpoint: str, pool: int = POOL, session: Any = None) -> Any:
    """A boto3 S3 client; from a new ``Session`` unless one is given."""
    return (session or boto3.session.Session()).client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        config=client_config(pool),
    )


def make_storage(endpoint: str) -> Any:
    """``S3Storage`` as the service would configure it (it reads Django settings)."""
    from django.conf import settings

    if not settings.configured:
        settings.configure(USE_TZ=True)
    from storages.backends.s3 import S3Storage

    return S3Storage(
        bucket_name=BUCKET,
        endpoint_url=endpoint,
        access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=REGION,
        client_config=client_config(),
        file_overwrite=True,
    )


class RequestCounter:
    """HTTP requests a botocore client sends (each retry and each ranged part counts)."""

    def __init__(self, client: Any) -> None:
        self.count = 0
        self._lock = threading.Lock()
        client.meta.events.register("before-send.s3", self._sent)

    def _sent(self, **_: Any) -> None:
        with self._lock:
            self.count += 1


# The operations, one pair per case. ``i`` numbers the iteration (puts write
# distinct keys); reads are of objects put before timing starts.


def boto3_exists(client: Any, key: str) -> bool:
    try:
        client.head_object(Bucket=BUCKET, Key=key)
    except ClientError as error:
        if error.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
            return False
        raise
    return True


def storages_range(storage: Any, key: str) -> bytes:
    """The Storage API has no ranged read: open() downloads the whole object first."""
    with storage.open(key, "rb") as file:
        file.seek(1000)
        return file.read(1000)


def small_cases(client: Any, storage: Any, data: bytes) -> dict[str, dict[str, Callable]]:
    from django.core.files.base import ContentFile

    def boto3_get(_: int) -> bytes:
        return client.get_object(Bucket=BUCKET, Key="small/read")["Body"].read()

    def boto3_range(_: int) -> bytes:
        return client.get_object(Bucket=BUCKET, Key="small/read", Range=RANGE)["Body"].read()

    def storages_get(_: int) -> bytes:
        with storage.open("small/read", "rb") as file:
            return file.read()

    return {
        "put 100 KB": {
            "boto3": lambda i: client.put_object(Bucket=BUCKET, Key=f"small/b/{i}", Body=data),
            "storages": lambda i: storage.save(f"small/s/{i}", ContentFile(data)),
        },
        "get 100 KB whole": {"boto3": boto3_get, "storages": storages_get},
        "get 100 KB bytes=1000-1999": {
            "boto3": boto3_range,
            "storages": lambda _: storages_range(storage, "small/read"),
        },
        "head: size": {
            "boto3": lambda _: client.head_object(Bucket=BUCKET, Key="small/read")["ContentLength"],
            "storages": lambda _: storage.size("small/read"),
        },
        "head: exists": {
            "boto3": lambda _: boto3_exists(client, "small/read"),
            "storages": lambda _: storage.exists("small/read"),
        },
    }


@dataclass
class Samples:
    """One client's figures for one case: seconds per operation, requests in all."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    requests: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, other: dict[str, Any]) -> None:
        self.wall += other["wall"]
        self.cpu += other["cpu"]
        self.requests += other["requests"]
        for name, values in other.get("extra", {}).items():
            self.extra.setdefault(name, []).extend(values)


def timed(operation: Callable[[int], Any], iterations: int, start: int = 0) -> dict[str, Any]:
    """Wall and CPU seconds of ``operation(i)``, ``i`` counting ``iterations`` from ``start``."""
    wall, cpu = [], []
    for i in range(start, start + iterations):
        cpu_started, started = time.process_time(), time.perf_counter()
        operation(i)
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    return {"wall": wall, "cpu": cpu, "requests": 0}


def check_small(client: Any, storage: Any, data: bytes) -> None:
    """Both clients read back what was put, and the range is the right 1,000 bytes."""
    cases = small_cases(client, storage, data)
    for name in CLIENTS:
        for case, expected in (
            ("get 100 KB whole", data),
            ("get 100 KB bytes=1000-1999", data[1000:2000]),
            ("head: size", SMALL),
            ("head: exists", True),
        ):
            if cases[case][name](0) != expected:
                raise RuntimeError(f"{name}: {case} answered something else")


def measure_small(
    endpoint: str, data: bytes, rounds: int, iterations: int
) -> dict[tuple[str, str], Samples]:
    client, storage = make_client(endpoint), make_storage(endpoint)
    client.put_object(Bucket=BUCKET, Key="small/read", Body=data)
    counters = {
        "boto3": RequestCounter(client),
        "storages": RequestCounter(storage.connection.meta.client),
    }
    check_small(client, storage, data)
    cases = small_cases(client, storage, data)
    for pair in cases.values():  # warm-up: connections open, code paths loaded
        for name in CLIENTS:
            timed(pair[name], 3, start=10**6)
    results: dict[tuple[str, str], Samples] = {}
    for number in range(rounds):
        order = CLIENTS if number % 2 == 0 else CLIENTS[::-1]
        for case, pair in cases.items():
            for name in order:
                before = counters[name].count
                figures = timed(pair[name], iterations, start=number * iterations)
                figures["requests"] = counters[name].count - before
                results.setdefault((case, name), Samples()).add(figures)
    return results


# The 30 MB cases, each in a child process of its own.


def proc_status_kib(name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {name} in /proc/self/status")


def reset_peak_rss() -> bool:
    """VmHWM back to the current RSS (Linux clear_refs 5); False where not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


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
    baseline = proc_status_kib("VmRSS")
    exact = reset_peak_rss()
    before = counter.count
    figures = timed(operation, iterations)
    figures["requests"] = counter.count - before
    figures["extra"] = {
        "peak_growth_mib": [(proc_status_kib("VmHWM") - baseline) / 1024],
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
                arguments = ["--child", case, name, endpoint, str(source), str(iterations)]
                out = subprocess.run(
                    [sys.executable, __file__, *arguments],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                results.setdefault((case, name), Samples()).add(json.loads(out))
    return results


# Client creation, in a fresh process too: the first client loads botocore's models.


def creation_child(endpoint: str, count: int) -> None:
    """Prints, as JSON, seconds per client made in several ways, and RSS per client kept."""
    figures: dict[str, Any] = {}
    started = time.perf_counter()
    first = make_client(endpoint)
    figures["first client in the process"] = [time.perf_counter() - started]
    first.head_bucket(Bucket=BUCKET)  # the first request loads more (endpoint rules)
    figures["first client, first request"] = [time.perf_counter() - started]
    session = boto3.session.Session()
    kept = []  # every client stays alive, so that RSS only grows
    for label, shared in (
        ("new Session().client()", None),
        ("session.client(), one Session", session),
    ):
        seconds = []
        gc.collect()
        rss = proc_status_kib("VmRSS")
        for _ in range(count):
            started = time.perf_counter()
            kept.append(make_client(endpoint, session=shared))
            seconds.append(time.perf_counter() - started)
        figures[label] = seconds
        figures[f"{label}: RSS per client kept"] = (proc_status_kib("VmRSS") - rss) / 1024 / count
    # S3Storage keeps one boto3 Session and resource per thread (threading.local):
    # each new thread that touches it pays this once.
    storage = make_storage(endpoint)
    seconds = []

    def connect() -> None:
        started = time.perf_counter()
        storage.connection.meta.client.head_bucket(Bucket=BUCKET)
        seconds.append(time.perf_counter() - started)

    for _ in range(count):
        thread = threading.Thread(target=connect)
        thread.start()
        thread.join()
    figures["S3Storage, first use in a new thread (incl. 1 HEAD)"] = seconds
    print(json.dumps(figures))


def creation(endpoint: str, count: int) -> dict[str, Any]:
    code = "import time; t = time.perf_counter(); import boto3; print(time.perf_counter() - t)"
    imports = [
        float(
            subprocess.run(
                [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True
            ).stdout
        )
        for _ in range(3)
    ]
    out = subprocess.run(
        [sys.executable, __file__, "--child", "creation", "-", endpoint, "-", str(count)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {"import boto3 (fresh interpreter)": imports, **json.loads(out)}


# Threads sharing one client.


class PoolDiscards(logging.Handler):
    """Counts urllib3's "Connection pool is full, discarding connection" warnings."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "pool is full" in record.getMessage():
            self.count += 1


def gets_per_second(
    get: Callable[[str], bytes], objects: dict[str, bytes], workers: int, per_worker: int
) -> tuple[float, float, int, int]:
    """Gets per second alone and in ``workers`` threads; wrong bodies and errors in threads."""
    digests = {key: hashlib.sha256(data).digest() for key, data in objects.items()}
    keys = sorted(objects)

    def work(seed: int) -> tuple[int, int]:
        chooser = random.Random(seed)
        wrong = failed = 0
        for _ in range(per_worker):
            key = chooser.choice(keys)
            try:
                wrong += hashlib.sha256(get(key)).digest() != digests[key]
            except Exception:  # noqa: BLE001 - the figure is how many failed
                failed += 1
        return wrong, failed

    everyone = threading.Barrier(workers)

    def first_use(_: int) -> None:
        everyone.wait()  # holds each task in a thread of its own
        get(keys[0])

    get(keys[0])  # this thread's first use: S3Storage builds its Session and resource
    started = time.perf_counter()
    work(-1)
    alone = per_worker / (time.perf_counter() - started)
    with ThreadPoolExecutor(workers) as executor:
        list(executor.map(first_use, range(workers)))  # every worker's, before timing
        started = time.perf_counter()
        results = list(executor.map(work, range(workers)))
        together = workers * per_worker / (time.perf_counter() - started)
    return alone, together, sum(r[0] for r in results), sum(r[1] for r in results)


def threads(endpoint: str, objects: dict[str, bytes]) -> list[str]:
    """8 threads x 50 whole gets of random 100 KB objects through one client, bodies checked."""
    workers, per_worker = 8, 50
    storage = make_storage(endpoint)

    def storages_get(key: str) -> bytes:
        with storage.open(key, "rb") as file:
            return file.read()

    def boto3_get(pool: int) -> Callable[[str], bytes]:
        client = make_client(endpoint, pool)
        return lambda key: client.get_object(Bucket=BUCKET, Key=key)["Body"].read()

    # boto3's guide ("Multithreading or multiprocessing with clients"): clients
    # are generally thread-safe, though not to share across processes;
    # Resources and Sessions are not, which is why S3Storage keeps a Session
    # and a resource per thread.
    contenders = {
        f"boto3, one client, max_pool_connections={POOL}": boto3_get(POOL),
        "boto3, one client, max_pool_connections=2": boto3_get(2),
        "S3Storage, one instance (a resource per thread)": storages_get,
    }
    logger = logging.getLogger("urllib3.connectionpool")
    discards = PoolDiscards()
    logger.addHandler(discards)
    logger.propagate = False  # counted here, not printed
    lines = []
    try:
        for label, get in contenders.items():
            discards.count = 0
            alone, together, wrong, failed = gets_per_second(get, objects, workers, per_worker)
            lines.append(
                f"  {label:48} 1 thread {alone:5.0f}/s, {workers} threads {together:5.0f}/s;"
                f" wrong bodies {wrong}, errors {failed}, connections discarded {discards.count}"
            )
    finally:
        logger.removeHandler(discards)
        logger.propagate = True
    return lines


# What the store answers where a backend must know.


def answer(call: Callable[[], Any]) -> str:
    """``200``, or the status and error code of the ClientError ``call`` raised."""
    try:
        response = call()
    except ClientError as error:
        status = error.response["ResponseMetadata"]["HTTPStatusCode"]
        code = error.response["Error"].get("Code")
        if code == str(status):  # botocore's stand-in when the answer had no body
            return f"{status}, no body (so no error code)"
        return f"{status} {code}"
    return str(response["ResponseMetadata"]["HTTPStatusCode"])


def corrupting_client(endpoint: str, checksum_calculation: str) -> Any:
    """A client whose PutObject bodies get one bit flipped after they were signed.

    ``when_required`` sends only the signed payload hash (X-Amz-Content-SHA256);
    ``when_supported`` (botocore's default) adds an x-amz-checksum-crc32 header.
    """
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        config=client_config().merge(Config(request_checksum_calculation=checksum_calculation)),
    )

    def corrupt(request: Any, **_: Any) -> None:
        request.body.seek(0)
        data = request.body.read()
        request.body = io.BytesIO(bytes([data[0] ^ 1]) + data[1:])

    client.meta.events.register("before-send.s3.PutObject", corrupt)
    return client


def behaviour(endpoint: str, data: bytes) -> list[str]:
    client = make_client(endpoint)
    client.put_object(Bucket=BUCKET, Key="quirks/object", Body=data)
    lines = [
        f"  {question:52} {result}"
        for question, result in (
            ("get, missing key", answer(lambda: client.get_object(Bucket=BUCKET, Key="none"))),
            ("head, missing key", answer(lambda: client.head_object(Bucket=BUCKET, Key="none"))),
            ("get, missing bucket", answer(lambda: client.get_object(Bucket="nobucket", Key="x"))),
            ("put, missing bucket", answer(partial(client.put_object, Bucket="nobucket", Key="x"))),
            ("head_bucket, missing bucket", answer(lambda: client.head_bucket(Bucket="nobucket"))),
            ("create_bucket, existing", answer(lambda: client.create_bucket(Bucket=BUCKET))),
            (
                'create_bucket "ab" (2 characters)',
                answer(lambda: client.create_bucket(Bucket="ab")),
            ),
        )
    ]
    for header in (
        RANGE,
        "bytes=-100",
        f"bytes={SMALL - 100}-",
        f"bytes={SMALL - 1}-{SMALL + 500}",
        f"bytes={SMALL}-{SMALL + 10}",
        "bytes=5-2",
        "bytes=0-1,5-6",
    ):
        try:
            response = client.get_object(Bucket=BUCKET, Key="quirks/object", Range=header)
        except ClientError as error:
            result = f"{error.response['ResponseMetadata']['HTTPStatusCode']}"
            result += f" {error.response['Error']['Code']}"
        else:
            body = response["Body"].read()
            result = (
                f"{response['ResponseMetadata']['HTTPStatusCode']}"
                f" Content-Range {response.get('ContentRange', '-')}, {len(body)} bytes"
            )
        lines.append(f"  {'Range ' + header:52} {result}")

    etag = client.head_object(Bucket=BUCKET, Key="quirks/object")["ETag"].strip('"')
    lines.append(
        f"  {'ETag of a single put':52} "
        + ("MD5 of the body" if etag == hashlib.md5(data).hexdigest() else etag)
    )
    parts = [random.Random(2).randbytes(5 * 2**20) for _ in range(2)] + [b"tail"]
    transfer = TransferConfig(multipart_threshold=5 * 2**20, multipart_chunksize=5 * 2**20)
    client.upload_fileobj(io.BytesIO(b"".join(parts)), BUCKET, "quirks/multipart", Config=transfer)
    etag = client.head_object(Bucket=BUCKET, Key="quirks/multipart")["ETag"].strip('"')
    expected = hashlib.md5(b"".join(hashlib.md5(part).digest() for part in parts)).hexdigest()
    lines.append(
        f"  {'ETag of a 3-part multipart upload':52} "
        + ("MD5 of the parts' MD5s, -3 (as AWS)" if etag == f"{expected}-3" else etag)
    )

    def sha256(body: bytes) -> str:
        return base64.b64encode(hashlib.sha256(body).digest()).decode()

    right = client.put_object(
        Bucket=BUCKET,
        Key="quirks/sha",
        Body=data,
        ChecksumAlgorithm="SHA256",
        ChecksumSHA256=sha256(data),
    )
    stored = client.head_object(Bucket=BUCKET, Key="quirks/sha", ChecksumMode="ENABLED")
    lines.append(
        f"  {'put, right ChecksumSHA256':52} {right['ResponseMetadata']['HTTPStatusCode']};"
        f" head (ChecksumMode=ENABLED) returns it: {stored.get('ChecksumSHA256') == sha256(data)}"
    )
    wrong_md5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    # The last two: SeaweedFS here checks no signature (no identities are
    # configured); with one configured, a bad signature is refused and the
    # signed payload hash still goes unchecked (tried by hand).
    for label, key, arguments, corrupting in (
        ("put, wrong ChecksumSHA256", "sha-wrong", {"ChecksumSHA256": sha256(b"other")}, None),
        ("put, wrong ChecksumCRC32", "crc-wrong", {"ChecksumCRC32": "AAAAAA=="}, None),
        ("put, wrong Content-MD5", "md5-wrong", {"ContentMD5": wrong_md5}, None),
        ("body changed after signing, signed hash only", "flip-sigv4", {}, "when_required"),
        ("body changed after signing, default CRC32 too", "flip-crc32", {}, "when_supported"),
    ):
        sender = corrupting_client(endpoint, corrupting) if corrupting else client
        key = f"quirks/{key}"
        result = answer(partial(sender.put_object, Bucket=BUCKET, Key=key, Body=data, **arguments))
        try:
            kept = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        except ClientError:
            result += "; nothing stored"
        else:
            result += "; stored " + ("intact" if kept == data else "CORRUPTED")
        lines.append(f"  {label:52} {result}")
    return lines


# Printing.


def ms(seconds: float) -> str:
    return f"{seconds * 1000:9.2f}"


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[8] if len(values) > 1 else values[0]


def table(results: dict[tuple[str, str], Samples], *, big: bool) -> None:
    header = (
        f"{'case':28} {'client':9} {'median ms':>9} {'p90 ms':>9} {'CPU ms/op':>9} {'req/op':>6}"
    )
    print(header + (f" {'1st piece ms':>12} {'peak RSS +MiB':>13}" if big else ""))
    for (case, name), samples in results.items():
        count = len(samples.wall)
        median, cpu = statistics.median(samples.wall), sum(samples.cpu) / count
        line = (
            f"{case if name == CLIENTS[0] else '':28} {name:9} {ms(median)} {ms(p90(samples.wall))}"
            f" {ms(cpu)} {samples.requests / count:6.1f}"
        )
        if big:
            first = samples.extra.get("first_piece")
            line += f" {ms(statistics.median(first)) if first else '-':>12}"
            exact = all(samples.extra["exact_peak"])
            line += f" {max(samples.extra['peak_growth_mib']):12.1f}{'' if exact else '?'}"
        print(line)


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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
        sys.exit("bench/storage.py compares with django-storages: pip install django-storages")
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as directory:
        store = ObjectStore(Path(directory) / "store")
        try:
            store.wait()
            run(args, store.endpoint_url, Path(directory))
        finally:
            store.stop()


if __name__ == "__main__":
    main()
