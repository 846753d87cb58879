"""API.md §16 MQTT: a real Mosquitto broker, a live server publishing to it, a real subscriber.

The broker is Debian's ``mosquitto`` (scripts/test installs it), started
here on a free port with persistence on, so that a subscriber's session
survives the broker's restart as it would in a real installation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from conftest import LiveServer, png_bytes, start_runserver, stop, wait_until
from images.delivery.mqtt import Broker, BrokerRefused, device_topic
from ops.mosquitto import Mosquitto


class Subscriber:
    """A persistent-session subscriber to ``<prefix>/#`` at QoS 1: it keeps what it is sent."""

    def __init__(self, port: int, prefix: str, *, session: str | None = None) -> None:
        self.messages: list[tuple[str, dict, bool]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=session or f"test-{uuid.uuid4().hex[:8]}",
            clean_session=session is None,
        )
        self.client.on_connect = lambda client, *_: client.subscribe(f"{prefix}/#", qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._message
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.subscribed.wait(10), "the broker did not take the subscription"

    def _message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((message.topic, json.loads(message.payload), message.retain))

    def on(self, topic: str) -> list[dict]:
        with self.lock:
            return [payload for name, payload, _ in self.messages if name == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    mosquitto = Mosquitto(tmp_path, persistent=True)
    mosquitto.start()
    yield mosquitto
    mosquitto.stop()


@pytest.fixture
def server(tmp_path: Path, broker: Mosquitto) -> Iterator[LiveServer]:
    live = start_runserver(tmp_path, {"IMAGES_MQTT": f"mqtt://127.0.0.1:{broker.port}/site-a"})
    yield live
    stop(live.process)


def upload(server: LiveServer, device: str, timestamp: str, seed: int) -> dict:
    request = urllib.request.Request(
        f"{server.url}/collections/images?deviceId={device}&timestamp={timestamp}",
        data=png_bytes(seed=seed),
        headers={"Content-Type": "image/png", "Accept": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 201
        return json.load(response)


def test_each_image_is_published_and_the_newest_retained_as_latest(server, broker):
    subscriber = Subscriber(broker.port, "site-a")
    try:
        newer = upload(server, "cam/1", "2026-01-01T00:00:02Z", seed=1)
        older = upload(server, "cam/1", "2026-01-01T00:00:01Z", seed=2)  # sent late
        topic = "site-a/cam%2F1"
        wait_until(lambda: len(subscriber.on(f"{topic}/image")) == 2)
        assert [body["id"] for body in subscriber.on(f"{topic}/image")] == [
            newer["id"],
            older["id"],
        ]
        assert subscriber.on(f"{topic}/image")[0] == newer  # the event JSON: the metadata
    finally:
        subscriber.close()
    # A subscriber that comes later gets the retained latest: the newest by timestamp.
    later = Subscriber(broker.port, "site-a")
    try:
        wait_until(lambda: bool(later.on(f"{topic}/latest")))
        assert [body["id"] for body in later.on(f"{topic}/latest")] == [newer["id"]]
        assert all(retained for name, _, retained in later.messages if name.endswith("/latest"))
    finally:
        later.close()


def test_what_is_stored_while_the_broker_is_down_is_published_when_it_returns(server, broker):
    session = f"kept-{uuid.uuid4().hex[:8]}"
    subscriber = Subscriber(broker.port, "site-a", session=session)
    first = upload(server, "cam-2", "2026-01-01T00:00:01Z", seed=3)
    wait_until(lambda: len(subscriber.on("site-a/cam-2/image")) == 1)
    broker.stop()
    started = time.monotonic()
    during = [upload(server, "cam-2", f"2026-01-01T00:00:0{i}Z", seed=i)["id"] for i in (4, 5)]
    assert time.monotonic() - started < 5  # uploads never wait for the broker
    broker.start()  # its persistence keeps the subscriber's session
    wait_until(lambda: len(subscriber.on("site-a/cam-2/image")) >= 3, timeout=40)
    ids = [body["id"] for body in subscriber.on("site-a/cam-2/image")]
    assert ids[0] == first["id"]
    assert ids[1:3] == during
    subscriber.close()

    def metrics() -> str:
        return urllib.request.urlopen(f"{server.url}/metrics", timeout=30).read().decode()

    assert 'images_deliveries_total{kind="mqtt",result="delivered"}' in metrics()
    # The publisher's position is written within a second of its acknowledgement.
    wait_until(lambda: 'images_delivery_backlog{kind="mqtt"} 0.0' in metrics())


def test_broker_urls_are_parsed_strictly():
    broker = Broker.parse("mqtts://user:p%40ss@broker.example:8884/plant/one")
    assert (broker.host, broker.port, broker.tls) == ("broker.example", 8884, True)
    assert (broker.username, broker.password, broker.prefix) == ("user", "p@ss", "plant/one")
    assert broker.public_url == "mqtts://user@broker.example:8884/plant/one"
    assert Broker.parse("mqtt://b").port == 1883
    assert Broker.parse("mqtt://b").prefix == "images"
    for bad in ("http://b", "mqtt://", "mqtt://b:99999", "mqtt://b/x?y", "mqtt://b/a/#", "b"):
        with pytest.raises(BrokerRefused):
            Broker.parse(bad)
    assert device_topic("a/b+c#d%") == "a%2Fb%2Bc%23d%25"


def test_a_malformed_broker_url_stops_the_service_at_start(tmp_path: Path):
    done = subprocess.run(
        [sys.executable, "manage.py", "check"],
        env={**os.environ, "IMAGES_MQTT": "mqtt://b/a/+"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode != 0
    assert "topic prefix" in done.stderr
