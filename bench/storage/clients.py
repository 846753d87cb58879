"""The two contenders of ``python -m bench.storage``, configured as the service would."""

from __future__ import annotations

import threading
from typing import Any

import boto3
from botocore.config import Config

from ops.seaweedfs import CREDENTIALS

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
