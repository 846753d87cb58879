"""The 100 KB cases of ``python -m bench.storage``: put, get, ranged get, head, interleaved."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from bench.storage.clients import (
    BUCKET,
    CLIENTS,
    RANGE,
    SMALL,
    RequestCounter,
    make_client,
    make_storage,
)
from bench.storage.figures import Samples, timed

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
