"""Thumbnails made on demand and kept in Django's cache (API.md §8): make or take from the cache.

Making one is :mod:`images.compression.thumbnail` (Pillow, no Django).

Keyed by the stored bytes' sha256, so a cache hit never reads the image.
Each image's made thumbnails are listed under one more key, so that deleting
the image (``DELETE``, retention) can forget them rather than leave a
deleted picture's thumbnails in memory or Redis for a week.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.core.cache import cache

from images import compression, selectors, storage
from images.compression.thumbnail import (
    CONTENT_TYPES,
    EXTENSIONS,
    SIZE_DEFAULT,
    SIZE_MAX,
    SIZE_MIN,
    thumbnail_make,
)
from images.errors import ImageTooLarge, TooCostly
from images.models import Image

CACHE_SECONDS = 7 * 86_400
__all__ = [
    "CONTENT_TYPES",
    "EXTENSIONS",
    "SIZE_DEFAULT",
    "SIZE_MAX",
    "SIZE_MIN",
    "thumbnail_for",
    "thumbnails_forget",
]


def _key(sha256: str, size: int, content_type: str) -> str:
    return f"thumbnail:v1:{sha256}:{size}:{EXTENSIONS[content_type]}"


def _index_key(sha256: str) -> str:
    return f"thumbnail:v1:{sha256}:made"


def thumbnail_for(image: Image, size: int, content_type: str, limits: compression.Limits) -> bytes:
    """The thumbnail's bytes, from the cache or made (and cached) from the stored image."""
    key = _key(image.sha256, size, content_type)
    data = cache.get(key)
    if data is None:
        stored = storage.image_bytes(selectors.image_get(image_id=image.id))
        _check_cost(stored, limits)
        data = thumbnail_make(stored, size=size, content_type=content_type).data
        cache.set(key, data, CACHE_SECONDS)
        # A race between two requests may drop one entry from the index;
        # that thumbnail then merely lives out its week.
        made = set(cache.get(_index_key(image.sha256), ()))
        cache.set(_index_key(image.sha256), sorted(made | {key}), CACHE_SECONDS)
    return data


def _check_cost(stored: bytes, limits: compression.Limits) -> None:
    """Today's decoding limits, before decoding (API.md §15): an image stored
    before a limit was set (scans, frames, pixels) costs no more than they allow."""
    try:
        compression.probe(stored, limits)
    except ImageTooLarge as exc:
        raise TooCostly(f"no thumbnail: {exc}") from None


def thumbnails_forget(sha256s: Iterable[str]) -> None:
    """Drop every cached thumbnail of these images' bytes."""
    index_keys = [_index_key(sha256) for sha256 in sha256s]
    if not index_keys:
        return
    made = cache.get_many(index_keys)
    cache.delete_many([key for keys in made.values() for key in keys] + index_keys)
