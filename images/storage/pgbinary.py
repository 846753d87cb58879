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

import uuid
from collections.abc import Iterable, Sequence
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


# COPY's binary format (PostgreSQL docs, "COPY: Binary Format"): a signature,
# flags and header extension length, then per row the field count and each
# field as its length and bytes, then -1.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
_COPY_TRAILER = (-1).to_bytes(2, "big", signed=True)


def write_bytea_in_pieces(
    database: BaseDatabaseWrapper,
    *,
    table: str,
    column: str,
    key: uuid.UUID,
    size: int,
    pieces: Iterable[bytes | memoryview],
) -> None:
    """Set ``column`` of row ``key`` (a uuid primary key ``id``) to ``size`` bytes sent in pieces.

    An UPDATE needs its value whole in the client's memory (twice, with the
    driver's buffer); COPY streams. So the bytes go through COPY into a
    temporary table (dropped at commit), and one UPDATE moves them on the
    server. Must run inside the transaction that inserted the row.
    """
    with _cursor(database, binary_results=False) as cursor:
        cursor.execute(
            "CREATE TEMPORARY TABLE IF NOT EXISTS image_upload (id uuid, data bytea)"
            " ON COMMIT DELETE ROWS"
        )
        raw = cursor.cursor if hasattr(cursor, "cursor") else cursor
        with raw.copy("COPY image_upload (id, data) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.write(_COPY_HEADER + (2).to_bytes(2, "big"))
            copy.write((16).to_bytes(4, "big", signed=True) + key.bytes)
            copy.write(size.to_bytes(4, "big", signed=True))
            for piece in pieces:
                copy.write(piece)
            copy.write(_COPY_TRAILER)
        cursor.execute(
            f"UPDATE {table} SET {column} = image_upload.data FROM image_upload"
            f" WHERE {table}.id = image_upload.id"
        )
        cursor.execute("DELETE FROM image_upload")


def _cursor(database: BaseDatabaseWrapper, *, binary_results: bool) -> Any:
    import psycopg  # only PostgreSQL deployments get here

    database.ensure_connection()
    raw = psycopg.Cursor(database.connection)
    if binary_results:
        raw.format = psycopg.pq.Format.BINARY
    if database.queries_logged:
        return database.make_debug_cursor(raw)
    return database.make_cursor(raw)
