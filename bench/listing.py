"""Listing page time at 100 and at 100,000 images of one device.

Keyset paging (images.selectors.device_images) should make a page cost the
same at the start of a listing as deep into it, and the same for a device
with 100 images as for one with 100,000: every page is one range scan of the
(device_id, timestamp) index that starts where the previous page ended.

Runs the whole HTTP stack in-process (URL routing, DRF, serialisation, JSON)
through Django's test client, on a throwaway SQLite database filled with
metadata rows (bulk_create, a 1-byte blob each). The device grows from the
first size to the next in the same database. Prints the median (p50) time of
the first page and of the deepest page (reached by cursor) at each size.

    python bench/listing.py [--sizes 100 100000] [--limit 50] [--repeat 300]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from django.test import Client

ROOT = Path(__file__).resolve().parents[1]
DEVICE = "bench-camera"
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 100_000])
    parser.add_argument("--limit", type=int, default=50, help="images per page")
    parser.add_argument("--repeat", type=int, default=300, help="requests timed per figure")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-listing-") as workdir:
        run(args, Path(workdir) / "bench.sqlite3")


def run(args: argparse.Namespace, database: Path) -> None:
    # Before django.setup(): settings read the database from the environment.
    os.environ["DATABASE_URL"] = f"sqlite:///{database}"
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    # Replace bench/ on sys.path: its http.py would shadow the standard library.
    sys.path[0] = str(ROOT)
    import django

    django.setup()
    logging.disable(logging.INFO)  # no per-request log lines
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    print(f"temporary SQLite database; {args.limit} images per page; p50 of {args.repeat}")
    print(f"{'images':>9}  {'first page':>12}  {'deepest page':>12}")
    results = []
    stored = 0
    for size in sorted(args.sizes):
        _populate(stored, size)
        stored = size
        first, deep = _measure(size, args.limit, args.repeat)
        results.append((size, first, deep))
        print(f"{size:>9,}  {first * 1000:>9.2f} ms  {deep * 1000:>9.2f} ms")
    times = [t for _, first, deep in results for t in (first, deep)]
    print(f"slowest / fastest: {max(times) / min(times):.2f}x (goal: under 1.5x)")
    _explain(args.limit)
    connection.close()


def _populate(start: int, end: int) -> None:
    """Rows ``start`` to ``end`` of the device, one minute apart."""
    from django.db import transaction

    from images.models import Image

    batch = []
    with transaction.atomic():
        for i in range(start, end):
            digest = f"{i:064x}"
            batch.append(
                Image(
                    id=uuid.uuid4(),
                    device_id=DEVICE,
                    timestamp=T0 + timedelta(minutes=i),
                    content_type="image/png",
                    width=640,
                    height=480,
                    original_size=1000,
                    stored_size=900,
                    sha256=digest,
                    original_sha256=digest,
                    data=b"\x00",
                )
            )
            if len(batch) == 1000:
                Image.objects.bulk_create(batch)
                batch = []
        Image.objects.bulk_create(batch)


def _measure(size: int, limit: int, repeat: int) -> tuple[float, float]:
    """p50 seconds of the first page and of the last full page (by cursor)."""
    from django.test import Client

    from formats.rfc3339 import format_timestamp
    from images.serializers import cursor_encode

    client = Client(SERVER_NAME="localhost")
    first_url = f"/devices/{DEVICE}/images?limit={limit}"
    # The cursor that starts the last `limit` images: the deepest page.
    before_last_page = T0 + timedelta(minutes=size - limit - 1)
    cursor = cursor_encode("t", format_timestamp(before_last_page))
    deep_url = f"{first_url}&cursor={cursor}"
    for url in (first_url, deep_url):
        body = client.get(url).json()
        assert len(body["items"]) == limit, (url, len(body["items"]))
    return _p50(client, first_url, repeat), _p50(client, deep_url, repeat)


def _p50(client: Client, url: str, repeat: int) -> float:
    for _ in range(max(10, repeat // 10)):  # warm caches and connections
        client.get(url)
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(url)
        samples.append(time.perf_counter() - started)
        assert response.status_code == 200
    return statistics.median(samples)


def _explain(limit: int) -> None:
    """SQLite's plan for a deep page: an index range scan, no sort, no OFFSET."""
    from django.db import connection

    from images.models import Image

    queryset = (
        Image.objects.defer("data")
        .filter(device_id=DEVICE, timestamp__gt=T0)
        .order_by("timestamp")[: limit + 1]
    )
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        plan = cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
    print("query plan:", "; ".join(row[-1] for row in plan))


if __name__ == "__main__":
    main()
