"""Prometheus metrics (prometheus_client).

Under ``serve`` several worker processes share the figures through
prometheus_client's multiprocess mode: ``serve`` points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory, and ``/metrics`` then
aggregates every worker's files. Without it (runserver, tests) the process's
own registry is exported.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter("http_requests_total", "HTTP requests answered", ["method", "route", "status"])
LATENCY = Histogram(
    "http_request_duration_seconds",
    "Time from request to response",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
UPLOAD_BYTES = Counter("image_upload_bytes_total", "Image bytes received in new uploads")
STORED_BYTES = Counter("image_stored_bytes_total", "Image bytes stored for new uploads")
SAVED_BYTES = Counter("image_compression_saved_bytes_total", "Bytes saved by lossless compression")
UPLOADS = Counter("image_uploads_total", "Uploads by outcome", ["outcome"])
OPTIMIZED = Counter(
    "images_optimized_total",
    "Images the optimizer finished, by result (optimized, kept, failed, gone) and effort",
    ["result", "effort"],
)


class Collector(Protocol):
    """What prometheus_client's registries take: figures read when ``/metrics`` is."""

    def collect(self) -> Iterable[Any]: ...


# Figures that live elsewhere (the optimizer's backlog, in the database),
# registered by their owner: this module imports nothing of the service's.
_collectors: list[Collector] = []


def register_collector(collector: Collector) -> None:
    """Export ``collector``'s figures with every ``/metrics`` answer (once per process)."""
    if collector not in _collectors:
        _collectors.append(collector)


@functools.cache
def _request_children(method: str, route: str, status: int) -> tuple[Any, Any]:
    # Label lookups cost more than the increments; routes are a small fixed set.
    return REQUESTS.labels(method, route, str(status)), LATENCY.labels(route)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    # Clients choose the method name: keep the label set bounded.
    method = method if method in _METHODS else "OTHER"
    counter, histogram = _request_children(method, route, status)
    counter.inc()
    histogram.observe(seconds)


def render() -> tuple[bytes, str]:
    """The exposition text, aggregated over workers in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = CollectorRegistry()
        registry.register(_OwnMetrics())
    for collector in _collectors:
        registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _OwnMetrics:
    """This process's own metrics (without multiprocess mode), beside the backlog's."""

    def collect(self) -> Iterator[Any]:
        yield from REGISTRY.collect()


COMPACTED = Counter(
    "images_compacted_total",
    "Images the compactor finished, by result (compacted, kept, failed, gone)",
    ["result"],
)


def record_compacted(result: str) -> None:
    COMPACTED.labels(result).inc()


DAMAGED = Counter(
    "images_damaged_total", "Reads refused because the bytes did not match the image's sha256"
)


def record_damaged() -> None:
    DAMAGED.inc()


DELIVERIES = Counter(
    "images_deliveries_total",
    "Events sent to webhooks and MQTT, by kind and result (delivered, retried, refused, expired)",
    ["kind", "result"],
)


def record_deliveries(kind: str, result: str, count: int = 1) -> None:
    if count:
        DELIVERIES.labels(kind, result).inc(count)


PRUNED = Counter("images_pruned_total", "Images deleted by retention (IMAGES_RETENTION_*)")


def record_pruned(count: int) -> None:
    PRUNED.inc(count)


def record_optimized(result: str, *, effort: str) -> None:
    OPTIMIZED.labels(result, effort).inc()


def record_upload(*, original_size: int, stored_size: int, created: bool) -> None:
    UPLOADS.labels("created" if created else "retry").inc()
    if created:
        UPLOAD_BYTES.inc(original_size)
        STORED_BYTES.inc(stored_size)
        SAVED_BYTES.inc(original_size - stored_size)
