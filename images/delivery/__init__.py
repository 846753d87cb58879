"""Deliveries out (API.md §16): each image stored or deleted, told to webhooks and MQTT.

The family, one module each:

- :mod:`.models`: the outbox (events written in the transaction of their
  change) and the receivers, each with its cursor into it;
- :mod:`.outbox`: writing events, and reading them in order;
- :mod:`.webhooks`: registering receivers, the signature, an attempt's outcome;
- :mod:`.posting`: one signed ``POST`` over a kept-alive connection;
- :mod:`.mqtt`: publishing to a broker (``IMAGES_MQTT``);
- :mod:`.feed`, :mod:`.receiver`, :mod:`.sending`, :mod:`.worker`: the
  background work that delivers (the newest events read once, each
  receiver's loop with its order and backoff, the event loop they run on,
  the leases), in ``serve`` or ``manage.py deliver``.

The core calls :func:`image_stored` and :func:`images_deleted` inside the
transaction that changes the image; nothing else waits for a receiver.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from formats.rfc3339 import format_timestamp
from images.delivery import outbox

if TYPE_CHECKING:  # images.models imports this package's models: no import circle
    from images.live import Event


def image_stored(event: Event) -> None:
    """In the transaction that stores the image: the event receivers will be sent."""
    outbox.record_stored(
        image_id=event.image_id,
        device_id=event.device_id,
        timestamp=event.timestamp,
        metadata=event.metadata,
    )


def images_deleted(deleted: Iterable[tuple[uuid.UUID, str, datetime | str]]) -> None:
    """In the transaction that deletes them: (id, device id, timestamp) of each image gone."""
    outbox.record_deleted(
        (str(image_id), device_id, format_timestamp(_datetime(timestamp)))
        for image_id, device_id, timestamp in deleted
    )


def _datetime(value: datetime | str) -> datetime:
    # A raw query's column: SQLite returns its text, PostgreSQL a datetime.
    if isinstance(value, str):
        parsed = parse_datetime(value)
        assert parsed is not None, value
        value = parsed
    if timezone.is_naive(value):
        value = timezone.make_aware(value, UTC)
    return value
