"""What each CoAP request gets around its work, as Django gives HTTP requests (API.md §5).

:func:`in_worker` runs database and CPU work in a worker thread with
Django's per-request connection handling; :func:`log_request` writes the
request's line on the ``requests`` logger, as ``ops.middleware`` does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from aiocoap import Message
from aiocoap.numbers.codes import Code
from asgiref.sync import sync_to_async
from django.db import InterfaceError, OperationalError, close_old_connections, reset_queries
from rest_framework.exceptions import ValidationError

from images.errors import InvalidInput, Unavailable

request_log = logging.getLogger("requests")
P = ParamSpec("P")
T = TypeVar("T")


def in_worker(func: Callable[P, T]) -> Callable[P, Awaitable[T]]:
    """``func`` as a coroutine run in a worker thread.

    Around it, Django's per-request connection handling (what its request
    signals do for HTTP): expired or broken connections are closed. A
    database that does not answer is :class:`Unavailable` (5.03), and a
    serializer's validation error :class:`InvalidInput` (4.00).
    """

    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        # What Django's request_started signal does for HTTP; without it the
        # query log of DEBUG grows to 9,000 entries, images' bytes included.
        reset_queries()
        close_old_connections()
        try:
            return func(*args, **kwargs)
        except ValidationError as exc:
            raise invalid(exc) from None  # the serializers' field errors: 4.00
        except (OperationalError, InterfaceError) as exc:
            # The database went away or is locked past its timeout: 5.03.
            raise Unavailable(f"the database is not available ({type(exc).__name__})") from exc
        finally:
            close_old_connections()

    return sync_to_async(call, thread_sensitive=False)


def log_request(request: Message, path: tuple[str, ...], code: Code | None, seconds: float) -> None:
    """One JSON line, as HTTP writes (ops.middleware), on the same logger."""
    if not request_log.isEnabledFor(logging.INFO):
        return
    block1 = request.opt.block1
    request_log.info(
        json.dumps(
            {
                "transport": "coap",
                "method": request.code.name,
                "path": "/" + "/".join(path),
                "status": "unanswered" if code is None else code.dotted,
                "ms": round(seconds * 1000, 2),
                "bytes_in": len(request.payload),
                "block1": None if block1 is None else block1.block_number,
                "remote": request.remote.hostinfo,
            },
            ensure_ascii=False,
        )
    )


def invalid(exc: ValidationError) -> InvalidInput:
    """One short diagnostic line (CoAP has no room for the HTTP error map)."""
    return InvalidInput(
        " ".join(
            f"{field}: {' '.join(str(message) for message in messages)}"
            for field, messages in exc.detail.items()
        )
    )
