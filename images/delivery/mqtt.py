"""MQTT publication (``IMAGES_MQTT``), with paho-mqtt.

Each image stored is published at QoS 1 to ``<prefix>/<deviceId>/image``
with its event JSON, and, when it is the newest by timestamp the publisher
has seen for its device, retained at ``<prefix>/<deviceId>/latest``; an
image deleted goes to ``<prefix>/<deviceId>/deleted``. The cursor moves only
past what the broker acknowledged (PUBACK), so what was stored while the
broker was away is published when it returns.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from images.delivery.models import DELETED
from images.delivery.outbox import Event
from images.delivery.webhooks import DELIVERED, Outcome

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "images"
# Seconds to wait for a connection, and for the broker's acknowledgements.
CONNECT_SECONDS = 10.0
ACK_SECONDS = 30.0


class BrokerRefused(ValueError):
    """``IMAGES_MQTT`` is not a broker URL we can use: the reason says why."""


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    tls: bool
    username: str
    password: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> Broker:
        """``mqtt[s]://[user:pass@]host[:port][/prefix]``, strictly (a typo fails at start)."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise BrokerRefused(f"IMAGES_MQTT: {exc}") from None
        if parts.scheme not in ("mqtt", "mqtts"):
            raise BrokerRefused("IMAGES_MQTT is mqtt://host[:port][/prefix] (or mqtts://)")
        if not parts.hostname:
            raise BrokerRefused("IMAGES_MQTT names no host")
        if "?" in url or "#" in url:  # even empty: "mqtt://b/a/#" reads as a fragment
            raise BrokerRefused("IMAGES_MQTT takes no query or fragment")
        prefix = unquote(parts.path.strip("/")) or DEFAULT_PREFIX
        if any(ch in prefix for ch in "+#\0"):
            raise BrokerRefused("the MQTT topic prefix may not hold +, # or NUL")
        tls = parts.scheme == "mqtts"
        return cls(
            host=parts.hostname,
            port=port or (8883 if tls else 1883),
            tls=tls,
            username=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
            prefix=prefix,
        )

    @property
    def public_url(self) -> str:
        """The URL without the password: what ``Receiver.url`` shows."""
        user = f"{self.username}@" if self.username else ""
        scheme = "mqtts" if self.tls else "mqtt"
        return f"{scheme}://{user}{self.host}:{self.port}/{self.prefix}"

    def topic(self, device_id: str, leaf: str) -> str:
        return f"{self.prefix}/{device_topic(device_id)}/{leaf}"


def device_topic(device_id: str) -> str:
    """A device id as one topic level: "/", "+" and "#" (and "%") percent-encoded.

    MQTT forbids the wildcards in a published topic, and "/" would split the
    id into levels.
    """
    return "".join(f"%{ord(ch):02X}" if ch in "%/+#" else ch for ch in device_id)


class Publisher:
    """One connection to the broker, kept while it works; one batch at a time."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._client: paho.Client | None = None
        # The newest timestamp retained at each device's ``latest``.
        self._latest: dict[str, datetime] = {}

    def send(self, events: list[Event]) -> tuple[int, Outcome]:
        """Publish ``events`` in order; how many the broker acknowledged, and the outcome."""
        try:
            client = self._connected()
            newest = self._newest(events)
            infos = [
                info
                for index, event in enumerate(events)
                for info in self._publish(client, event, latest=index in newest)
            ]
            # The last first: by then the broker has mostly acknowledged the
            # rest, so this thread sleeps once per batch, not once per message.
            for info in reversed(infos):
                info.wait_for_publish(ACK_SECONDS)
                if not info.is_published():
                    raise TimeoutError("the broker did not acknowledge in time")
        except (OSError, RuntimeError, ValueError) as exc:
            # All or nothing: the batch is published again (at least once).
            self.close()
            return 0, Outcome("retry", f"{type(exc).__name__}: {exc}"[:200])
        return len(events), DELIVERED

    def _newest(self, events: list[Event]) -> set[int]:
        """Which of ``events`` go to their device's ``latest``: only the newest of the batch.

        A retained message another replaces in the same batch would reach no
        one who connects later; under a burst, publishing only the last
        halves the messages.
        """
        chosen: dict[str, int] = {}
        for index, event in enumerate(events):
            if event.kind == DELETED:
                continue
            timestamp = datetime.fromisoformat(event.timestamp)
            newest = self._latest.get(event.device_id)
            if newest is None or timestamp >= newest:
                self._latest[event.device_id] = timestamp
                chosen[event.device_id] = index
        return set(chosen.values())

    def _publish(
        self, client: paho.Client, event: Event, *, latest: bool
    ) -> list[paho.MQTTMessageInfo]:
        if event.kind == DELETED:
            topic = self.broker.topic(event.device_id, "deleted")
            return [_checked(client.publish(topic, event.payload, qos=1))]
        topic = self.broker.topic(event.device_id, "image")
        infos = [_checked(client.publish(topic, event.payload, qos=1))]
        if latest:
            topic = self.broker.topic(event.device_id, "latest")
            infos.append(_checked(client.publish(topic, event.payload, qos=1, retain=True)))
        return infos

    def _connected(self) -> paho.Client:
        if self._client is not None and self._client.is_connected():
            return self._client
        self.close()
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"images-{socket.gethostname()}-{os.getpid()}",
        )
        if self.broker.username:
            client.username_pw_set(self.broker.username, self.broker.password or None)
        if self.broker.tls:
            client.tls_set()
        # Unacknowledged messages in flight: a batch goes out without waiting
        # for each PUBACK in turn.
        client.max_inflight_messages_set(200)
        client.connect(self.broker.host, self.broker.port, keepalive=30)
        client.loop_start()
        self._client = client
        if not _wait_connected(client):
            self.close()
            raise ConnectionError(f"no answer from the MQTT broker at {self.broker.host}")
        return client

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()


def _checked(info: paho.MQTTMessageInfo) -> paho.MQTTMessageInfo:
    if info.rc != paho.MQTT_ERR_SUCCESS:
        raise ConnectionError(paho.error_string(info.rc))
    return info


def _wait_connected(client: paho.Client) -> bool:
    deadline = time.monotonic() + CONNECT_SECONDS
    while time.monotonic() < deadline:
        if client.is_connected():
            return True
        time.sleep(0.02)
    return False
