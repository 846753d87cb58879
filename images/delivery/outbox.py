"""The outbox: events written with the change they describe, read by each receiver in order."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import connection
from django.db.models import Count, Max, Min, Q
from django.utils import timezone

from images.delivery.models import DELETED, IMAGE, OutboxEvent, Receiver

# PostgreSQL hands out sequence numbers as rows are inserted, but
# transactions may commit in another order: a reader that saw seq 11 could
# later miss 10, committed after it. Writers therefore take this lock (held
# until their commit, for the last moment of an upload's transaction), so
# events commit in seq order and a cursor never passes one still to come.
# SQLite has a single writer already.
_ORDER_LOCK = 0x696D6167  # "imag"

# How long a process trusts its answer to "is anyone receiving?": a receiver
# added elsewhere gets the events stored from at most this long after.
_WANTED_SECONDS = 1.0
_wanted: tuple[float, bool] = (-_WANTED_SECONDS, False)


def wanted() -> bool:
    """Whether events are recorded: with no receiver (the default), uploads write nothing more."""
    global _wanted
    checked_at, answer = _wanted
    now = time.monotonic()
    if now - checked_at >= _WANTED_SECONDS:
        answer = bool(settings.IMAGES_MQTT) or Receiver.objects.exists()
        _wanted = (now, answer)
    return answer


def forget_wanted() -> None:
    """Ask again at the next event (after ``webhook add`` in this process, and in tests)."""
    global _wanted
    _wanted = (-_WANTED_SECONDS, False)


def record_stored(*, image_id: str, device_id: str, timestamp: str, metadata: bytes) -> None:
    """In the transaction that stores the image: its event, if anyone receives events."""
    if not wanted():
        return
    _commit_in_order()
    # One plain INSERT, not ``objects.create()``: measured in-process
    # (docs/performance.md, "Deliveries"), the model's save path cost an
    # upload about 0.2 ms, a tenth of it, for a row nothing reads back here.
    values = (
        IMAGE,
        device_id,
        _IMAGE_ID.get_db_prep_value(image_id, connection),
        timestamp,
        metadata.decode(),
        _CREATED_AT.get_db_prep_value(timezone.now(), connection),
    )
    with connection.cursor() as cursor:
        cursor.execute(_insert_sql(), values)


_IMAGE_ID = OutboxEvent._meta.get_field("image_id")
_CREATED_AT = OutboxEvent._meta.get_field("created_at")


@functools.cache
def _insert_sql() -> str:
    quote = connection.ops.quote_name
    meta = OutboxEvent._meta
    columns = ("kind", "device_id", "image_id", "timestamp", "payload", "created_at")
    names = ", ".join(quote(meta.get_field(name).column) for name in columns)
    return (
        f"INSERT INTO {quote(meta.db_table)} ({names}) VALUES ({', '.join(['%s'] * len(columns))})"
    )


def record_deleted(deleted: Iterable[tuple[str, str, str]]) -> None:
    """In the transaction that deletes them: an event per (image id, device id, timestamp)."""
    rows = list(deleted)
    if not rows or not wanted():
        return
    _commit_in_order()
    OutboxEvent.objects.bulk_create(
        OutboxEvent(
            kind=DELETED,
            device_id=device_id,
            image_id=image_id,
            timestamp=timestamp,
            payload=json.dumps({"id": image_id, "deviceId": device_id, "timestamp": timestamp}),
        )
        for image_id, device_id, timestamp in rows
    )


def _commit_in_order() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_ORDER_LOCK])


@dataclass(frozen=True, slots=True)
class Event:
    """One outbox row, as receivers are sent it (read as plain values, not models)."""

    seq: int
    kind: str
    device_id: str
    timestamp: str
    payload: str
    created_at: datetime


FIELDS = ("seq", "kind", "device_id", "timestamp", "payload", "created_at")


def device_matches(device: str, device_id: str) -> bool:
    """Whether ``device_id`` is one of ``device``'s (as :func:`device_filter` in SQL)."""
    if not device:
        return True
    if device.endswith("*"):
        return device_id.startswith(device[:-1])
    return device_id == device


def device_filter(device: str) -> Q:
    """The events of ``device``: an id, a prefix ending in ``*``, or "" for all."""
    if not device:
        return Q()
    if device.endswith("*"):
        return Q(device_id__startswith=device[:-1])
    return Q(device_id=device)


def pending(device: str, cursor: int, limit: int) -> list[Event]:
    """The next events for a receiver of ``device`` at ``cursor``, oldest first."""
    rows = (
        OutboxEvent.objects.filter(device_filter(device), seq__gt=cursor)
        .order_by("seq")
        .values_list(*FIELDS)[:limit]
    )
    return [Event(*row) for row in rows]


def expire(device: str, cursor: int, cutoff: datetime) -> tuple[int, int]:
    """Give up a receiver's events created before ``cutoff``: its new cursor, and how many."""
    old = OutboxEvent.objects.filter(device_filter(device), seq__gt=cursor, created_at__lt=cutoff)
    figures = old.aggregate(last=Max("seq"), count=Count("seq"))
    return figures["last"] or cursor, figures["count"]


def head() -> int:
    """The newest event's seq (0 when none): where a new receiver starts.

    Every event up to it has committed (see ``_ORDER_LOCK``): a receiver
    that read ``head()`` and then found nothing more for itself may move its
    cursor there, so that a receiver of one quiet device does not hold back
    :func:`trim`.
    """
    newest = OutboxEvent.objects.order_by("-seq").values_list("seq", flat=True).first()
    return newest or 0


def backlog() -> dict[str, tuple[int, datetime | None]]:
    """Per receiver kind: events still to be sent (summed over receivers), and the oldest's time."""
    figures: dict[str, tuple[int, datetime | None]] = {}
    for receiver in Receiver.objects.all():
        waiting = OutboxEvent.objects.filter(
            device_filter(receiver.device), seq__gt=receiver.cursor
        ).aggregate(count=Count("seq"), oldest=Min("created_at"))
        count, oldest = figures.get(receiver.kind, (0, None))
        if waiting["oldest"] is not None and (oldest is None or waiting["oldest"] < oldest):
            oldest = waiting["oldest"]
        figures[receiver.kind] = (count + waiting["count"], oldest)
    return figures


def trim() -> int:
    """Delete the events every receiver is done with; how many went.

    Numbers are never handed out again (PostgreSQL's sequence; SQLite's
    AUTOINCREMENT, which Django declares), so an emptied table is safe.
    """
    done = Receiver.objects.aggregate(done=Min("cursor"))["done"]
    if done is None:  # no receiver: nobody will read what is there
        done = head()
    deleted, _ = OutboxEvent.objects.filter(seq__lte=done).delete()
    return deleted
