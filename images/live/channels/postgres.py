"""PostgreSQL's own ``NOTIFY``/``LISTEN``: every instance on one database hears every other."""

from __future__ import annotations

import time

from django.db import DEFAULT_DB_ALIAS, connections

from images.live.channels.base import (
    CHANNEL_NAME,
    HEARTBEAT_SECONDS,
    IDLE_CHECK_SECONDS,
    Listener,
    gather,
    retrying,
)

PG_APPLICATION_NAME = "images-events"


class PostgresChannel:
    """``NOTIFY images_events`` / ``LISTEN images_events`` on the service's own database."""

    def __init__(self, alias: str = DEFAULT_DB_ALIAS) -> None:
        self._alias = alias

    def publish(self, payload: bytes) -> None:
        # On the request's own connection: one short statement after commit.
        with connections[self._alias].cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL_NAME, payload.decode()])

    def listen(self, listener: Listener) -> None:
        import psycopg

        params = connections[self._alias].settings_dict
        conninfo = {
            "dbname": params["NAME"],
            "user": params.get("USER") or None,
            "password": params.get("PASSWORD") or None,
            "host": params.get("HOST") or None,
            "port": params.get("PORT") or None,
        }
        first = True

        def connect_and_listen() -> None:
            nonlocal first
            with psycopg.connect(
                **{k: v for k, v in conninfo.items() if v},
                autocommit=True,
                connect_timeout=5,
                # Named, for an operator's pg_stat_activity.
                application_name=PG_APPLICATION_NAME,
            ) as connection:
                connection.execute(f"LISTEN {CHANNEL_NAME}")
                listener.listening()
                if not first:
                    listener.gap()
                first = False
                checked = time.monotonic()
                while not listener.idle():
                    # The first notification as it comes (for up to a second),
                    # then all that came meanwhile (timeout 0: one poll).
                    first = list(connection.notifies(timeout=IDLE_CHECK_SECONDS, stop_after=1))
                    if first:
                        listener.pace()
                        batch = gather(first, lambda: list(connection.notifies(timeout=0)))
                        listener.deliver([notification.payload.encode() for notification in batch])
                    if time.monotonic() - checked > HEARTBEAT_SECONDS:
                        connection.execute("SELECT 1")  # still there?
                        checked = time.monotonic()

        retrying(connect_and_listen, listener, "PostgreSQL")
