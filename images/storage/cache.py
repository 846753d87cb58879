"""A bounded, least-recently-used cache of image bytes under keys that never change meaning.

Keys are content-addressed (a sha256, or an object's key, which names the
sha256 of its bytes), so an entry can never be stale and nothing needs
invalidating. CoAP keeps served images in one so that a Block2 download
does not read the image again for every block; :mod:`images.storage` keeps
objects read from the store in one, since readers fetch recent images most.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

BLOB_CACHE_BYTES = 64 * 1024 * 1024


class BlobCache:
    """At most ``max_bytes`` in all, least recently used out first; thread-safe.

    A blob larger than ``max_bytes`` is not kept.
    """

    def __init__(self, max_bytes: int = BLOB_CACHE_BYTES) -> None:
        self._max_bytes = max_bytes
        self._blobs: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            blob = self._blobs.get(key)
            if blob is not None:
                self._blobs.move_to_end(key)
            return blob

    def put(self, key: str, blob: bytes) -> None:
        with self._lock:
            if len(blob) > self._max_bytes or key in self._blobs:
                return
            while self._size + len(blob) > self._max_bytes:
                _, evicted = self._blobs.popitem(last=False)
                self._size -= len(evicted)
            self._blobs[key] = blob
            self._size += len(blob)
