"""How many event streams each client holds, counted across ``serve``'s processes (API.md §15).

A client may hold ``IMAGES_EVENTS_PER_CLIENT`` streams at once, by address
and by token. Under ``serve`` its streams may be held by any HTTP worker and
by the stream listener, several processes: the count is kept in
``IMAGES_EVENTS_HOLDS_DIR`` (``serve`` makes one), as locks.

Each client (a key) has ``most`` slot files there; an open stream holds an
exclusive ``flock`` on one of them. A process that dies, however it dies,
lets go of its locks with its file descriptors, so no count is ever left
behind (a counter in a shared file would keep the streams of a killed
worker forever). A slot's file is removed when its stream ends, so the
directory holds only the clients of the moment; a process that opened a
slot's file just before it was removed finds, once it holds the lock, that
the name now names another file (or none), and tries again.

Without a directory (the development server, the tests' client), one
process serves every stream and the count is this process's.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
from collections import Counter
from pathlib import Path

from django.conf import settings

# A removed slot file is retried this often before the slot counts as taken.
_RETRIES = 3


class Held:
    """What one stream counts against; :meth:`release` (idempotent) gives it back."""

    def __init__(self, keys: tuple[str, ...], locks: list[tuple[Path, int]] | None) -> None:
        self._keys = keys  # counted in this process (no directory)
        self._locks = locks  # or these slots' locks

    def release(self) -> None:
        if self._locks is not None:
            locks, self._locks = self._locks, []
            for path, fd in locks:
                # Removed while locked: a newcomer that opened it meanwhile sees it gone.
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                os.close(fd)
        elif self._keys:
            keys, self._keys = self._keys, ()
            _local_release(keys)


def take(keys: tuple[str, ...], most: int) -> Held | None:
    """Count one stream against each of ``keys``; ``None`` if one of them holds ``most`` already."""
    directory = settings.IMAGES_EVENTS_HOLDS_DIR
    if not directory:
        return Held(keys, None) if _local_take(keys, most) else None
    locks: list[tuple[Path, int]] = []
    for key in keys:
        lock = _take_slot(Path(directory), key, most)
        if lock is None:
            Held((), locks).release()
            return None
        locks.append(lock)
    return Held((), locks)


def _take_slot(directory: Path, key: str, most: int) -> tuple[Path, int] | None:
    # Keys hold addresses and token ids: hashed, they make safe file names.
    stem = hashlib.sha256(key.encode()).hexdigest()[:32]
    for slot in range(most):
        path = directory / f"{stem}.{slot}"
        for _ in range(_RETRIES):
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                break  # held: the next slot
            if _still_named(path, fd):
                return path, fd
            os.close(fd)  # removed by its last holder meanwhile: open the name again
    return None


def _still_named(path: Path, fd: int) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


_open_per_client: Counter[str] = Counter()
_open_lock = threading.Lock()


def _local_take(keys: tuple[str, ...], most: int) -> bool:
    with _open_lock:
        if any(_open_per_client[key] >= most for key in keys):
            return False
        for key in keys:
            _open_per_client[key] += 1
        return True


def _local_release(keys: tuple[str, ...]) -> None:
    with _open_lock:
        for key in keys:
            _open_per_client[key] -= 1
            if _open_per_client[key] <= 0:
                del _open_per_client[key]
