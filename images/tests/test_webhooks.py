"""API.md §16 webhooks: real receivers over HTTP, a live server, its database.

Each receiver here is an HTTP server on a free port that records what it is
sent and answers what the test tells it to. The service is ``runserver`` as
a newcomer starts it (its deliverer thread included, on a file database:
the suite's in-memory one cannot be shared with a server), webhooks are
registered with ``manage.py webhook`` beside it, and uploads go over HTTP.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from conftest import (
    ROOT,
    LiveServer,
    children_running,
    free_port,
    fresh_database_url,
    png_bytes,
    start_runserver,
    start_serve,
    stop,
    wait_until,
)


class Receiving:
    """A webhook receiver: records each POST; ``answers`` gives the status of the next ones."""

    def __init__(self, answers: list[int] | None = None, port: int = 0) -> None:
        self.posts: list[dict] = []
        self.answers = list(answers or [])
        self.lock = threading.Lock()
        self.closed = False
        receiving = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                if receiving.closed:  # a kept-alive connection outlives the listener: drop it
                    self.close_connection = True
                    return
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiving.lock:
                    status = receiving.answers.pop(0) if receiving.answers else 204
                    if status < 300:
                        receiving.posts.append({"headers": dict(self.headers), "body": body})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def bodies(self) -> list[dict]:
        with self.lock:
            return [json.loads(post["body"]) for post in self.posts]

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_runserver(tmp_path_factory.mktemp("webhooks"))
    yield live
    stop(live.process)


@pytest.fixture
def receiving(server: LiveServer) -> Iterator[Callable[..., Receiving]]:
    """Make receivers; after the test they close and every webhook is removed."""
    made: list[Receiving] = []

    def make(answers: list[int] | None = None, port: int = 0) -> Receiving:
        made.append(Receiving(answers, port))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()
    server.query("DELETE FROM images_receiver")


def add(server: LiveServer, url: str, *args: str) -> tuple[int, str]:
    first, *rest = server.manage("webhook", "add", url, *args).stdout.splitlines()
    key = int(first.split(":")[0].removeprefix("webhook "))
    secret = rest[0].removeprefix("secret: ") if rest else ""
    return key, secret


_seconds = iter(range(10**6))


def upload(server: LiveServer, device: str) -> dict:
    """A new PNG from ``device`` (each call a new timestamp and new pixels)."""
    second = next(_seconds)
    stamp = f"2026-01-01T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}Z"
    request = urllib.request.Request(
        f"{server.url}/collections/images?deviceId={device}&timestamp={stamp}",
        data=png_bytes(seed=second + 1),
        headers={"Content-Type": "image/png", "Accept": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 201
        return json.load(response)


def get(server: LiveServer, path: str, accept: str = "*/*") -> bytes:
    request = urllib.request.Request(f"{server.url}{path}", headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read()


def receiver_state(server: LiveServer, key: int) -> dict:
    columns = ("cursor", "attempts", "failing_since", "last_error")
    [row] = server.query(f"SELECT {', '.join(columns)} FROM images_receiver WHERE id = ?", (key,))
    return dict(zip(columns, row, strict=True))


def test_each_image_stored_is_posted_signed_with_its_event_json(server, receiving):
    receiver = receiving()
    key, secret = add(server, receiver.url)
    assert len(secret) == 64
    stored = [upload(server, "sign-1") for _ in range(3)]
    wait_until(lambda: len(receiver.posts) == 3)
    for post, image in zip(receiver.posts, stored, strict=True):
        headers = post["headers"]
        # The body is the event stream's data: the image's metadata, as GET answers it.
        metadata = get(server, f"/collections/images/{image['id']}", "application/json")
        assert json.loads(post["body"]) == json.loads(metadata)
        assert headers["Images-Event"] == "image"
        assert headers["Content-Type"] == "application/json"
        expected = hmac.new(secret.encode(), post["body"], hashlib.sha256).hexdigest()
        assert headers["Images-Signature"] == f"sha256={expected}"
    deliveries = [post["headers"]["Images-Delivery"] for post in receiver.posts]
    assert len(set(deliveries)) == 3
    assert all(delivery.startswith(f"{key}-") for delivery in deliveries)


def test_a_deleted_image_is_posted_as_deleted(server, receiving):
    receiver = receiving()
    add(server, receiver.url, "--secret", "s3cret")
    image = upload(server, "delete-1")
    request = urllib.request.Request(
        f"{server.url}/collections/images/{image['id']}", method="DELETE"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 204
    wait_until(lambda: len(receiver.posts) == 2)
    assert [post["headers"]["Images-Event"] for post in receiver.posts] == ["image", "deleted"]
    assert receiver.bodies()[1] == {
        "id": image["id"],
        "deviceId": "delete-1",
        "timestamp": image["timestamp"],
    }
    body = receiver.posts[1]["body"]
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert receiver.posts[1]["headers"]["Images-Signature"] == f"sha256={expected}"


def test_failures_are_retried_with_backoff_and_order_is_kept(server, receiving):
    receiver = receiving(answers=[503, 500])  # the first two attempts fail
    key, _ = add(server, receiver.url)
    ids = [upload(server, "retry-1")["id"] for _ in range(3)]
    wait_until(lambda: len(receiver.posts) == 3)
    assert [body["id"] for body in receiver.bodies()] == ids
    wait_until(lambda: receiver_state(server, key)["attempts"] == 0)
    assert receiver_state(server, key)["failing_since"] is None
    metrics = get(server, "/metrics").decode()
    assert 'images_deliveries_total{kind="webhook",result="retried"}' in metrics


def test_a_refused_event_is_not_retried(server, receiving):
    receiver = receiving(answers=[400])
    add(server, receiver.url)
    upload(server, "refused-1")
    second = upload(server, "refused-1")
    wait_until(lambda: len(receiver.posts) == 1)
    time.sleep(0.5)
    assert [body["id"] for body in receiver.bodies()] == [second["id"]]
    assert 'result="refused"' in get(server, "/metrics").decode()


def failing_beside(server: LiveServer, failing_url: str, alive: Receiving, device: str) -> int:
    """A failing receiver beside a live one: five uploads reach the live one, in order.

    Returns the failing one's key, once it is marked failing.
    """
    key, _ = add(server, failing_url)
    add(server, alive.url)
    ids = [upload(server, device)["id"] for _ in range(5)]
    wait_until(lambda: len(alive.posts) == 5, timeout=10)
    assert [body["id"] for body in alive.bodies()] == ids
    wait_until(lambda: receiver_state(server, key)["failing_since"] is not None)
    return key


def test_a_dead_receiver_delays_neither_uploads_nor_the_others(server, receiving):
    dead_url = f"http://127.0.0.1:{free_port()}/nobody-listens"
    dead = failing_beside(server, dead_url, receiving(), "dead-1")
    assert "Connection" in receiver_state(server, dead)["last_error"]
    assert "failing since" in server.manage("webhook", "list").stdout
    # The dead receiver's five wait (the live one's position is written within 6 s).
    backlog = 'images_delivery_backlog{kind="webhook"} 5.0'
    wait_until(lambda: backlog in get(server, "/metrics").decode())


def test_a_receiver_of_one_device_or_family_gets_only_theirs(server, receiving):
    one, family = receiving(), receiving()
    add(server, one.url, "--device", "cam-1")
    add(server, family.url, "--device", "door-*")
    for device in ("cam-1", "door-2", "door-3", "cam-10"):
        upload(server, device)
    wait_until(lambda: len(family.posts) == 2 and len(one.posts) == 1)
    time.sleep(0.3)
    assert [body["deviceId"] for body in one.bodies()] == ["cam-1"]
    assert [body["deviceId"] for body in family.bodies()] == ["door-2", "door-3"]


def test_another_deliverer_shares_the_receivers_each_event_sent_once(server, receiving):
    receivers = [receiving() for _ in range(3)]
    for receiver in receivers:
        add(server, receiver.url)
    extra = subprocess.Popen(
        [sys.executable, "manage.py", "deliver"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": server.database_url},
    )
    try:
        ids = [upload(server, "shared-1")["id"] for _ in range(6)]
        for receiver in receivers:
            wait_until(lambda receiver=receiver: len(receiver.posts) == 6)
        time.sleep(0.5)
        for receiver in receivers:
            assert [body["id"] for body in receiver.bodies()] == ids
    finally:
        stop(extra)


@pytest.mark.django_db
def test_webhook_commands_list_remove_and_refuse_bad_values():
    def run(*args: str) -> str:
        out = io.StringIO()
        call_command("webhook", *args, stdout=out)
        return out.getvalue()

    url = "http://127.0.0.1:9/hook"
    key = int(run("add", url, "--device", "cam-*").split(":")[0].removeprefix("webhook "))
    assert f"{key}\t{url}\tcam-*\tafter event 0\tok" in run("list")
    bad_urls = ("ftp://example.org/x", "http://user:pw@example.org/x", "not a url", "http://h/a b")
    for bad in bad_urls:
        with pytest.raises(CommandError, match="URL"):
            run("add", bad)
    with pytest.raises(CommandError, match="already registered"):
        run("add", url, "--device", "cam-*")
    with pytest.raises(CommandError, match="--device"):
        run("add", url, "--device", "bad\x01id")
    assert f"webhook {key} removed" in run("remove", str(key))
    with pytest.raises(CommandError, match="no webhook"):
        run("remove", str(key))
    assert run("list").strip() == "no webhooks"


# --- Outages, each on a server of its own ---


def test_what_was_stored_while_the_receiver_was_down_survives_a_restart(tmp_path: Path, receiving):
    receiver = receiving()
    live = start_runserver(tmp_path)
    try:
        key, _ = add(live, receiver.url)
        first = upload(live, "restart-1")
        wait_until(lambda: len(receiver.posts) == 1)
        receiver.close()  # the receiver goes away; deliveries fail and wait
        ids = [upload(live, "restart-1")["id"] for _ in range(2)]
        stop(live.process)  # and the service restarts meanwhile
        back = receiving(port=receiver.port)
        live = start_runserver(tmp_path, database_url=live.database_url)
        # Once the old process's lease (10 s) runs out. At least once: the
        # first image may come again, as the old process may have been
        # stopped before it wrote its cursor (at most every 5 s).
        try:
            wait_until(lambda: set(ids) <= {body["id"] for body in back.bodies()}, timeout=40)
        except AssertionError:
            raise AssertionError(f"not delivered: {receiver_state(live, key)}") from None
        received = [body["id"] for body in back.bodies()]
        assert [image for image in received if image != first["id"]] == ids
        assert received.count(first["id"]) <= 1
    finally:
        stop(live.process)


def test_events_are_given_up_after_the_retry_window(tmp_path: Path):
    live = start_runserver(tmp_path, {"IMAGES_DELIVERY_GIVE_UP_HOURS": "0"})
    try:
        key, _ = add(live, f"http://127.0.0.1:{free_port()}/gone")
        upload(live, "expire-1")
        upload(live, "expire-1")
        [(head,)] = live.query("SELECT max(seq) FROM images_outboxevent")
        wait_until(lambda: receiver_state(live, key)["cursor"] == head)
        metrics = get(live, "/metrics").decode()
        assert 'images_deliveries_total{kind="webhook",result="expired"} 2.0' in metrics
    finally:
        stop(live.process)


def test_without_receivers_uploads_write_no_events(tmp_path: Path):
    live = start_runserver(tmp_path)
    try:
        upload(live, "quiet-1")
        assert live.query("SELECT count(*) FROM images_outboxevent") == [(0,)]
    finally:
        stop(live.process)


def test_serve_delivers_in_its_background_work(tmp_path: Path, receiving):
    receiver = receiving()
    database_url = fresh_database_url(tmp_path)
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SECRET_KEY": "test-only-secret",
        "ALLOWED_HOSTS": "127.0.0.1",
    }
    process, port = start_serve(tmp_path, env, workers=1)
    try:
        live = LiveServer(port, database_url, process)
        add(live, receiver.url)
        image = upload(live, "serve-1")
        wait_until(lambda: len(receiver.posts) == 1, timeout=30)
        assert receiver.bodies() == [image]
        # Its deliverer sends only on CPU the HTTP workers leave idle (the
        # receiver's thread), and writes at nice 19 (the main thread).
        (deliverer,) = children_running(process.pid, b"deliver")
        assert os.sched_getscheduler(deliverer) == os.SCHED_OTHER
        assert os.getpriority(os.PRIO_PROCESS, deliverer) == 19
        threads = [int(task.name) for task in Path(f"/proc/{deliverer}/task").iterdir()]
        assert os.SCHED_IDLE in {os.sched_getscheduler(thread) for thread in threads}
    finally:
        stop(process)
