"""Reads: each is one indexed query (an empty listing page adds an existence probe)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from django.core.exceptions import ValidationError
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Count, Field, Max, Min, Q, QuerySet
from django.db.models.expressions import Col

from images import storage
from images.errors import ImageNotFound
from images.models import Image
from images.storage import pgbinary

T = TypeVar("T")


def image_find(*, device_id: str, timestamp: datetime, with_data: bool = True) -> Image:
    """The image a device sent at ``timestamp`` (unique index lookup)."""
    image = _fetch_one(with_data=with_data, device_id=device_id, timestamp=timestamp)
    if image is None:
        raise ImageNotFound("no image for this deviceId and timestamp")
    return image


def image_get(*, image_id: uuid.UUID | str, with_data: bool = True) -> Image:
    """The image with this id (primary key lookup)."""
    try:
        image = _fetch_one(with_data=with_data, id=image_id)
    except (ValueError, ValidationError):
        image = None
    if image is None:
        raise ImageNotFound("no image with this id")
    return image


@dataclass(frozen=True)
class _RowPlan:
    """One lookup's SQL and the conversions its columns need, built once per connection."""

    sql: str
    key_fields: tuple[Field, ...]
    attnames: tuple[str, ...]
    converters: tuple[tuple[int, Col, tuple[Callable[..., Any], ...]], ...]
    binary: bool
    # SQLite: the SQL in sqlite3's own parameter style, converted once (see _sqlite_row).
    qmark_sql: str | None


# Each connection (a DatabaseWrapper, one per thread) keeps its own plans in
# this attribute, so they live and die with it.
_PLANS_ATTRIBUTE = "_images_row_plans"


def _row_plan(database: BaseDatabaseWrapper, with_data: bool, keys: tuple[str, ...]) -> _RowPlan:
    """The SQL and converters Django's compiler would use, without compiling each time.

    Downloads are the hot path. ``QuerySet.get()`` spent 190 of a lookup's
    270 microseconds compiling, and ``raw()`` still 45 looking up converters
    per row (measured on SQLite); the plan keeps the model's conversions
    (aware datetimes, UUIDs, booleans) and costs nothing after the first call.
    Plans belong to a connection because converters are its methods.
    """
    plans: dict[tuple[bool, tuple[str, ...]], _RowPlan] = database.__dict__.setdefault(
        _PLANS_ATTRIBUTE, {}
    )
    plan = plans.get((with_data, keys))
    if plan is not None:
        return plan
    meta = Image._meta
    quote = database.ops.quote_name
    fields = [f for f in meta.concrete_fields if with_data or f.name != "data"]
    key_fields = tuple(meta.get_field(name) for name in keys)
    converters = []
    for index, field in enumerate(fields):
        column = field.get_col(meta.db_table)
        found = database.ops.get_db_converters(column) + column.get_db_converters(database)
        if found:
            converters.append((index, column, tuple(found)))
    where = " AND ".join(f"{quote(field.column)} = %s" for field in key_fields)
    columns = ", ".join(_column_sql(field, quote) for field in fields)
    sql = f"SELECT {columns} FROM {quote(meta.db_table)} WHERE {where}"
    plan = _RowPlan(
        sql=sql,
        key_fields=key_fields,
        attnames=tuple(field.attname for field in fields),
        converters=tuple(converters),
        # See images.storage.pgbinary. Server-side binding also lets psycopg prepare
        # the statement once it has run a few times.
        binary=database.vendor == "postgresql",
        qmark_sql=_qmark(sql) if database.vendor == "sqlite" else None,
    )
    plans[(with_data, keys)] = plan
    return plan


def _column_sql(field: Field, quote: Callable[[str], str]) -> str:
    if field.name != "data":
        return quote(field.column)
    # The bytes come with the row only when small; a large image is streamed
    # by images.storage (NULL here), and one in an object store has none.
    return f"CASE WHEN {storage.whole_read_sql(quote)} THEN {quote(field.column)} END"


def _fetch_one(*, with_data: bool, **equal: Any) -> Image | None:
    """The row whose fields equal ``equal`` (a unique index), in one query.

    Without ``with_data`` the image bytes are not read (the field is
    deferred); with it, only a small image's (:func:`images.storage.image_bytes`
    reads the rest).
    """
    database = connections[DEFAULT_DB_ALIAS]
    plan = _row_plan(database, with_data, tuple(equal))
    params = [
        field.get_db_prep_value(value, database)
        for field, value in zip(plan.key_fields, equal.values(), strict=True)
    ]
    if plan.binary:
        row = pgbinary.fetch_one(database, plan.sql, params)
    elif plan.qmark_sql is not None and not (database.queries_logged or database.execute_wrappers):
        row = _sqlite_row(database, plan.qmark_sql, params)
    else:
        with database.cursor() as cursor:
            cursor.execute(plan.sql, params)
            row = cursor.fetchone()
    if row is None:
        return None
    values = list(row)
    for index, column, converters in plan.converters:
        for convert in converters:
            values[index] = convert(values[index], column, database)
    return Image.from_db(database.alias, plan.attnames, values)


def _qmark(sql: str) -> str:
    """``sql`` as Django's SQLite cursor hands it to sqlite3 (``%s`` -> ``?``, ``%%`` -> ``%``)."""
    from django.db.backends.sqlite3.base import FORMAT_QMARK_REGEX

    return FORMAT_QMARK_REGEX.sub("?", sql).replace("%%", "%")


def _sqlite_row(database: BaseDatabaseWrapper, sql: str, params: list[Any]) -> tuple | None:
    """One row through the connection's own sqlite3 cursor: what ``database.cursor()`` does
    (the health check, the connection, a broken transaction refused, errors as Django's),
    without converting the SQL's parameter style again on every query (a fifth of the
    lookup's time). Used only where no one watches queries (``queries_logged``: DEBUG,
    the tests' query counts) and no execute wrapper is installed.
    """
    database.close_if_health_check_failed()
    database.ensure_connection()
    database.validate_no_broken_transaction()
    with database.wrap_database_errors:
        return database.connection.execute(sql, params).fetchone()


# --- Listings ----------------------------------------------------------------
# Keyset paging: each page is one range scan of the (device_id, timestamp)
# unique index that starts where the previous page ended, so page 10,000 costs
# what page 1 does, and rows inserted meanwhile neither shift nor repeat rows.


@dataclass(frozen=True)
class DeviceSummary:
    """A device that has images, as the database aggregates it."""

    device_id: str
    image_count: int
    first_timestamp: datetime
    last_timestamp: datetime


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing; ``has_more`` when rows follow the last item."""

    items: list[T]
    has_more: bool


def _page(rows: list[T], limit: int) -> Page[T]:
    # Callers fetch one row more than they show: its presence is the "next" signal.
    return Page(items=rows[:limit], has_more=len(rows) > limit)


def _device_aggregates() -> QuerySet:
    return (
        Image.objects.values("device_id")
        .annotate(
            image_count=Count("*"),
            first_timestamp=Min("timestamp"),
            last_timestamp=Max("timestamp"),
        )
        .order_by("device_id")
    )


def device_list(
    *, after: str | None = None, limit: int, only: str | None = None
) -> Page[DeviceSummary]:
    """Devices that have images, ordered by id, the first ``limit`` after ``after`` (or ``only``).

    One GROUP BY query that walks the ``(device_id, timestamp)`` index in
    order and stops after ``limit + 1`` groups; no image row is loaded.
    """
    queryset = _device_aggregates()
    if only is not None:
        queryset = queryset.filter(device_id=only)
    if after is not None:
        queryset = queryset.filter(device_id__gt=after)
    return _page([DeviceSummary(**row) for row in queryset[: limit + 1]], limit)


def device_summary(*, device_id: str) -> DeviceSummary:
    """One device's counts and time range; :class:`ImageNotFound` when it has no images."""
    # No stored id holds a NUL (ingest refuses control characters), and
    # PostgreSQL refuses one in any text parameter.
    row = None if "\x00" in device_id else _device_aggregates().filter(device_id=device_id).first()
    if row is None:
        raise ImageNotFound("no images from this device", field="deviceId")
    return DeviceSummary(**row)


def device_images(
    *,
    device_id: str,
    start: datetime | None = None,
    end: datetime | None = None,
    after: datetime | None = None,
    limit: int,
    newest_first: bool = False,
) -> Page[Image]:
    """A device's images (metadata only) in time order, ``start`` <= timestamp < ``end``.

    ``after`` is the timestamp of the last image of the previous page (the
    keyset cursor: unique per device); the page holds the next ``limit``
    images after it in the listing's order (oldest first unless
    ``newest_first``). :class:`ImageNotFound` when the device has no images
    at all, as opposed to none in the range.
    """
    if "\x00" in device_id:
        raise ImageNotFound("no images from this device", field="deviceId")
    queryset = Image.objects.defer("data").filter(device_id=device_id)
    if start is not None:
        queryset = queryset.filter(timestamp__gte=start)
    if end is not None:
        queryset = queryset.filter(timestamp__lt=end)
    if after is not None:
        position = "timestamp__lt" if newest_first else "timestamp__gt"
        queryset = queryset.filter(**{position: after})
    queryset = queryset.order_by("-timestamp" if newest_first else "timestamp")
    page = _page(list(queryset[: limit + 1]), limit)
    if not page.items and not device_has_images(device_id=device_id):
        raise ImageNotFound("no images from this device", field="deviceId")
    return page


def device_has_images(*, device_id: str) -> bool:
    """Whether the device has any image (one index probe)."""
    return Image.objects.filter(device_id=device_id).exists()


def device_latest_images(*, devices: Sequence[DeviceSummary]) -> dict[str, Image]:
    """Each device's newest image (metadata only), keyed by device id, in one query.

    A device whose newest image was deleted since ``devices`` was read is
    missing from the answer.
    """
    if not devices:
        return {}
    keys = Q()
    for device in devices:
        keys |= Q(device_id=device.device_id, timestamp=device.last_timestamp)
    return {image.device_id: image for image in Image.objects.defer("data").filter(keys)}
