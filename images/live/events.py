"""What happened, told to every process of every instance (API.md §13).

When an image is stored, :func:`image_stored` publishes an :class:`Event`
on the channel every instance listens to (:mod:`images.live.channels`),
once the transaction that stored it commits; :func:`tokens_revoked` does
the same for revoked tokens, so that the streams they opened close
everywhere. The fan-out inside each process is :mod:`images.live.hub`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import transaction

from images.live import channels
from images.models import Image

log = logging.getLogger(__name__)

IMAGE = "image"
REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened: an image stored (its metadata) or tokens revoked."""

    kind: str
    image_id: str = ""
    device_id: str = ""
    # The image's timestamp (ISO 8601): which image is a device's latest.
    timestamp: str = ""
    # The image's metadata as JSON, exactly as GET /collections/images/{id} answers.
    metadata: bytes = b""
    token_ids: tuple[int, ...] = ()

    def encode(self) -> bytes:
        if self.kind == REVOKED:
            return json.dumps({"k": REVOKED, "tokens": list(self.token_ids)}).encode()
        head = json.dumps(
            {"k": IMAGE, "id": self.image_id, "d": self.device_id, "t": self.timestamp}
        )
        # The metadata travels as it will be sent, never parsed again on the way.
        return head.encode() + b"\n" + self.metadata

    @classmethod
    def decode(cls, payload: bytes) -> Event:
        head, _, metadata = payload.partition(b"\n")
        fields = json.loads(head)
        if fields["k"] == REVOKED:
            return cls(REVOKED, token_ids=tuple(int(key) for key in fields["tokens"]))
        return cls(IMAGE, fields["id"], fields["d"], fields["t"], metadata)


def image_event(image: Image) -> Event:
    # Imported here: the serializers import the HTTP stack, which the
    # channels' listener threads do not need.
    from rest_framework.renderers import JSONRenderer

    from images.serializers import image_metadata

    return Event(
        IMAGE,
        str(image.id),
        image.device_id,
        image.timestamp.isoformat(),
        JSONRenderer().render(image_metadata(image)),
    )


def image_stored(image: Image) -> Event:
    """Tell every instance that ``image`` was stored, once (and only if) it commits."""
    event = image_event(image)
    transaction.on_commit(lambda: _publish(event))
    return event


def tokens_revoked(token_ids: Iterable[int]) -> None:
    """Close the event streams these tokens opened, in every instance."""
    ids = tuple(token_ids)
    if ids:
        transaction.on_commit(lambda: _publish(Event(REVOKED, token_ids=ids)))


def _publish(event: Event) -> None:
    try:
        channels.current().publish(event.encode())
    except Exception:
        # The image is stored; a watcher that missed it finds it on its next
        # reconnect (Last-Event-ID replays from the database).
        log.warning("could not publish an event", exc_info=True)
