"""The background workers' loops: ``optimize --watch``, ``serve``'s workers and ``runserver``'s.

Each worker process runs both kinds of work apart (API.md §14): optimizing
in its main thread, at the priority it was started with (``serve`` starts
its workers below the HTTP workers), and compacting in a thread of its own
at the lowest priority (nice 19), which the kernel runs only with what the
rest leaves: under a sustained load compacting yields, and catches up when
the load falls. On Linux a thread has its own nice value.

A loop outlives an outage: when the database or the object store stops
answering, it waits (doubling the wait up to a minute) and tries again.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from django.db import DatabaseError, close_old_connections, connections

from images.errors import Unavailable

logger = logging.getLogger(__name__)

_LONGEST_WAIT_SECONDS = 60.0
LOWEST_PRIORITY = 19


def work_loop(
    next_one: Callable[[], str | None],
    *,
    name: str,
    stopping: threading.Event,
    interval: float = 1.0,
    watch: bool = True,
) -> int:
    """Call ``next_one`` until it finds nothing (or, with ``watch``, until ``stopping``).

    Returns how many images it took. Without ``watch`` an outage is raised,
    not waited out.
    """
    total = 0
    wait = interval
    while not stopping.is_set():
        try:
            result = next_one()
        except (DatabaseError, Unavailable) as exc:
            if not watch:
                raise
            logger.warning("%s: %s; trying again in %.0f s", name, exc, wait)
            stopping.wait(wait)
            wait = min(wait * 2, _LONGEST_WAIT_SECONDS)
            close_old_connections()
            continue
        wait = interval
        if result is not None:
            total += 1
            continue
        if not watch:
            break
        stopping.wait(interval)
        # A long-lived loop, like a request cycle: drop broken or expired
        # connections (CONN_MAX_AGE) between rounds.
        close_old_connections()
    return total


def start_compacting(stopping: threading.Event, *, interval: float = 1.0) -> threading.Thread:
    """The compact backlog's loop, in a daemon thread at the lowest CPU priority."""
    from images.lifecycle.compactor import compact_next

    def run() -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOWEST_PRIORITY)
        except OSError:
            logger.warning("compactor: could not lower its priority")
        try:
            work_loop(compact_next, name="compactor", stopping=stopping, interval=interval)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, name="compactor", daemon=True)
    thread.start()
    return thread
