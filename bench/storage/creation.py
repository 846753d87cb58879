"""What making a boto3 client costs, in a fresh process (the first one loads botocore's models)."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import threading
import time
from typing import Any

import boto3

from bench.storage import run_child
from bench.storage.clients import BUCKET, make_client, make_storage
from bench.support import ROOT, status_kib


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
        rss = status_kib("self")
        for _ in range(count):
            started = time.perf_counter()
            kept.append(make_client(endpoint, session=shared))
            seconds.append(time.perf_counter() - started)
        figures[label] = seconds
        figures[f"{label}: RSS per client kept"] = (status_kib("self") - rss) / 1024 / count
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
    out = run_child("creation", "-", endpoint, "-", str(count))
    return {"import boto3 (fresh interpreter)": imports, **json.loads(out)}
