"""The deliverer's event loop: every receiver it holds is a task on one thread.

Measured (bench/deliveries.py; docs/performance.md, "One event loop"): with a
thread per receiver each webhook POST cost about 11 context switches and
190 µs of CPU, the kernel's half of it waking threads; ten receivers took
more than an upload's own CPU. On one event loop the receivers' sockets are
waited on together, and a POST costs about 25 µs.

What may block (the database, the MQTT client's wait for its
acknowledgements) runs in a few threads beside the loop
(:meth:`Sending.blocking`): Django's ORM refuses to run on an event loop's
thread, and a broker that does not answer must not hold up the webhooks.
The threads started from the loop's thread inherit its scheduling class.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from django.db import DatabaseError, close_old_connections

T = TypeVar("T")

# The database and the MQTT client's waits; a broker that hangs holds one.
BLOCKING_THREADS = 4


class Sending:
    """An event loop in a thread of its own (``idle``: in Linux's idle scheduling class)."""

    def __init__(self, *, idle: bool = False) -> None:
        self.idle = idle
        self.loop = asyncio.new_event_loop()
        self._blocking = concurrent.futures.ThreadPoolExecutor(
            BLOCKING_THREADS, thread_name_prefix="deliver-blocking"
        )
        # Raised (on the loop) at each ring; the tasks wait for it to move.
        self.generation = 0
        self._rung = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name="deliver-sending", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        if self.idle and hasattr(os, "sched_setscheduler"):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # this thread only
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def start(self, coroutine: Coroutine[Any, Any, None]) -> concurrent.futures.Future[None]:
        """Run ``coroutine`` as a task on the loop (from any thread)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def ring(self) -> None:
        """Wake every task waiting in :meth:`woken` (from any thread)."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to wake
            self.loop.call_soon_threadsafe(self._ring)

    def _ring(self) -> None:
        self.generation += 1
        rung, self._rung = self._rung, asyncio.Event()
        rung.set()

    async def woken(self, seen: int, timeout: float) -> int:
        """Until a ring after generation ``seen``, or ``timeout`` s; the generation then."""
        if self.generation == seen:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._rung.wait()
        return self.generation

    async def blocking(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` in a thread beside the loop: the ORM, a blocking client."""
        return await self.loop.run_in_executor(self._blocking, _in_thread, function, args)

    def stop(self) -> None:
        """Once every task has ended: stop the loop and its threads."""
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self._blocking.shutdown(wait=True)
        self.loop.close()


def _in_thread(function: Callable[..., T], args: tuple[Any, ...]) -> T:
    try:
        return function(*args)
    except DatabaseError:
        close_old_connections()  # this thread's connection: the next call makes a new one
        raise
