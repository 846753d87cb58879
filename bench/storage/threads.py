"""Threads sharing one client, for ``python -m bench.storage``: gets per second, bodies checked."""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from bench.storage.clients import BUCKET, POOL, make_client, make_storage


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
