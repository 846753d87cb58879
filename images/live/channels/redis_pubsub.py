"""Redis pub/sub on ``REDIS_URL``: for deployments that already run Redis beside their instances."""

from __future__ import annotations

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
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(CHANNEL_NAME)
                pubsub.ping()
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


def _waiting(pubsub: Any) -> list:
    """The next Redis message already received, if any (timeout 0: no wait)."""
    message = pubsub.get_message(timeout=0.0)
    return [] if message is None else [message]
