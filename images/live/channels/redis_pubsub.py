"""Redis pub/sub on ``REDIS_URL``: for deployments that already run Redis beside their instances."""

from __future__ import annotations

import time
from typing import Any

from images.live.channels.base import (
    CHANNEL_NAME,
    HEARTBEAT_SECONDS,
    IDLE_CHECK_SECONDS,
    Listener,
    gather,
    retrying,
)


class RedisChannel:
    """Redis pub/sub on ``REDIS_URL``."""

    def __init__(self, url: str) -> None:
        import redis

        self._client = redis.Redis.from_url(url, socket_connect_timeout=5)
        self._url = url

    def publish(self, payload: bytes) -> None:
        self._client.publish(CHANNEL_NAME, payload)

    def listen(self, listener: Listener) -> None:
        import redis

        first = True

        def connect_and_listen() -> None:
            nonlocal first
            client = redis.Redis.from_url(
                self._url, socket_connect_timeout=5, health_check_interval=HEARTBEAT_SECONDS
            )
            pubsub = client.pubsub()
            try:
                pubsub.subscribe(CHANNEL_NAME)
                # Heard only once Redis confirms the subscription: SUBSCRIBE is
                # sent, not done, when subscribe() returns, and a PUBLISH from
                # another connection may be handled before it.
                _confirmed(pubsub)
                listener.listening()
                if not first:
                    listener.gap()
                first = False
                while not listener.idle():
                    message = pubsub.get_message(timeout=IDLE_CHECK_SECONDS)
                    if message is None:
                        continue
                    listener.pace()
                    batch = gather([message], lambda: _waiting(pubsub))
                    payloads = [each["data"] for each in batch if each["type"] == "message"]
                    if payloads:
                        listener.deliver(payloads)
            finally:
                pubsub.close()
                client.close()

        retrying(connect_and_listen, listener, "Redis")


def _confirmed(pubsub: Any) -> None:
    """Wait for Redis to confirm the subscription (or fail, and be retried)."""
    deadline = time.monotonic() + HEARTBEAT_SECONDS
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=IDLE_CHECK_SECONDS)
        if message is not None and message["type"] == "subscribe":
            return
    raise TimeoutError("Redis did not confirm the subscription")


def _waiting(pubsub: Any) -> list:
    """The next Redis message already received, if any (timeout 0: no wait)."""
    message = pubsub.get_message(timeout=0.0)
    return [] if message is None else [message]
