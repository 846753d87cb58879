"""PostgreSQL: image bytes to and from the server in binary, not as hex text.

Django's psycopg cursors bind parameters client-side: ``bytea`` travels as
hex text in both directions, escaped into the query string on the way in and
decoded on the way out. For image bytes that is the expensive part:

- fetching the 103 KB brick image took 1,148 microseconds as text and 530 in
  binary (measured in-process);
- inserting a 30 MB image peaked at 274 MiB above the worker's idle memory
  as text, several copies of its hex form (measured with ``bench/http.py``).

So the two statements that move image bytes use a server-binding psycopg
cursor, still wrapped by Django's cursor wrapper (query log, debug). Nothing
else changes: the rest of the ORM keeps Django's own cursors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper


def fetch_one(database: BaseDatabaseWrapper, sql: str, params: Sequence[Any]) -> Any:
    """One row with binary results (``bytea`` as bytes; UUID, datetimes, numbers as such)."""
    with _cursor(database, binary_results=True) as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


def execute(database: BaseDatabaseWrapper, sql: str, params: Sequence[Any]) -> None:
    """Run ``sql`` with its parameters bound by the server; ``%b`` sends one in binary."""
    with _cursor(database, binary_results=False) as cursor:
        cursor.execute(sql, params)


def _cursor(database: BaseDatabaseWrapper, *, binary_results: bool) -> Any:
    import psycopg  # only PostgreSQL deployments get here

    database.ensure_connection()
    raw = psycopg.Cursor(database.connection)
    if binary_results:
        raw.format = psycopg.pq.Format.BINARY
    if database.queries_logged:
        return database.make_debug_cursor(raw)
    return database.make_cursor(raw)
