"""Live push (API.md §13): what happened, told to every watcher in every instance.

The family, one module each:

- :mod:`.events`: the :class:`Event` (an image stored, tokens revoked) and
  its publication once the transaction commits;
- :mod:`.channels`: how events travel between processes and instances
  (PostgreSQL ``NOTIFY``, local sockets, Redis);
- :mod:`.hub`: the per-process fan-out to each watcher's bounded
  :class:`Subscription`;
- :mod:`.watch`: who may watch what, a device's latest image, and the
  :class:`Watch` a stream serves (replay, then live events).

Front ends import this package, not its modules; framing the events for a
wire (server-sent events, CoAP notifications) is theirs.
"""

from images.live.events import IMAGE, REVOKED, Event, image_event, image_stored, tokens_revoked
from images.live.hub import QUEUE_LIMIT, Closed, Hub, Subscription, hub
from images.live.watch import (
    REPLAY_LIMIT,
    Watch,
    image_latest,
    listener_origin,
    watch_check,
    watch_open,
)

__all__ = [
    "IMAGE",
    "QUEUE_LIMIT",
    "REPLAY_LIMIT",
    "REVOKED",
    "Closed",
    "Event",
    "Hub",
    "Subscription",
    "Watch",
    "hub",
    "image_event",
    "image_latest",
    "image_stored",
    "listener_origin",
    "tokens_revoked",
    "watch_check",
    "watch_open",
]
