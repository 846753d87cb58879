"""The channels events travel on between processes and instances (API.md §13).

``IMAGES_EVENTS`` picks one (``auto``, the default: PostgreSQL's channel on
PostgreSQL, local sockets on SQLite):

- :class:`PostgresChannel`: ``NOTIFY`` and ``LISTEN``. Every instance on
  one PostgreSQL hears every other; no service beside the database.
- :class:`LocalChannel`: one box (the SQLite default). Each listening
  process binds a Unix socket in a directory named after the database
  file; a publisher connects to every socket there and sends each event as
  one packet. The kernel wakes the listener at once: nothing polls the
  table.
- :class:`RedisChannel`: Redis pub/sub (``REDIS_URL``), for deployments
  that already run Redis beside several instances.

What a channel does for the hub is :mod:`.base`; this module picks the one
configured.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections

from images.live.channels.base import CHANNEL_NAME, Channel, Listener
from images.live.channels.local import LocalChannel
from images.live.channels.postgres import PG_APPLICATION_NAME, PostgresChannel
from images.live.channels.redis_pubsub import RedisChannel

__all__ = [
    "CHANNEL_NAME",
    "PG_APPLICATION_NAME",
    "Channel",
    "Listener",
    "LocalChannel",
    "PostgresChannel",
    "RedisChannel",
    "current",
    "kind",
    "local_directory",
]


def kind() -> str:
    """The channel ``IMAGES_EVENTS`` names (``auto`` resolved)."""
    chosen = settings.IMAGES_EVENTS
    if chosen != "auto":
        return chosen
    return "postgres" if connections[DEFAULT_DB_ALIAS].vendor == "postgresql" else "local"


def local_directory() -> Path:
    """The sockets' directory: one per database file, short enough for a socket path."""
    name = str(connections[DEFAULT_DB_ALIAS].settings_dict["NAME"])
    key = hashlib.sha256(os.path.abspath(name).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"images-events-{os.getuid()}-{key}"


_channels: dict[tuple[str, str], Channel] = {}
_channels_lock = threading.Lock()


def current() -> Channel:
    """This process's channel, as configured now."""
    chosen = kind()
    where = {
        "postgres": lambda: str(connections[DEFAULT_DB_ALIAS].settings_dict["NAME"]),
        "local": lambda: str(local_directory()),
        "redis": lambda: settings.REDIS_URL,
    }
    if chosen not in where:
        raise ValueError(f"IMAGES_EVENTS={chosen!r}: use auto, postgres, local or redis")
    key = (chosen, where[chosen]())
    with _channels_lock:
        channel = _channels.get(key)
        if channel is None:
            if chosen == "postgres":
                channel = PostgresChannel()
            elif chosen == "local":
                channel = LocalChannel(Path(key[1]))
            else:
                channel = RedisChannel(key[1])
            _channels[key] = channel
        return channel
