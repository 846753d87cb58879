"""The download fast path (images/http/fastpath.py) answers exactly as Django's handler does.

Each request goes into the real WSGI application (``config.wsgi``) with
``IMAGES_DOWNLOAD_FAST_PATH`` on and off, and through Django's test client;
then to two live ``serve`` processes on one database, one with the fast path
and one without. Status, headers (no ``Date``) and body must be equal, and
so must the request log lines and the request counters.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import logging
import os
import signal
import time
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
from django.core.management import call_command
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import Client, RequestFactory
from prometheus_client import REGISTRY

from config.wsgi import application
from conftest import fresh_database_url, png_bytes, start_serve
from images.models import Image

pytestmark = pytest.mark.django_db

REQUEST_ID = "fast-path-test"
KEY_QUERY = "deviceId=cam-1&timestamp=2024-08-18T02%3A04%3A07Z"
Answer = tuple[int, list[tuple[str, str]], bytes]


@contextlib.contextmanager
def connections_kept() -> Iterator[None]:
    """As Django's test client does: the test's transaction outlives each request."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def wsgi(method: str, path: str, headers: dict[str, str]) -> Answer:
    """One request into config.wsgi.application, read as a WSGI server reads it."""
    environ = RequestFactory().generic(method, path, headers=headers).environ
    started: list = []
    with connections_kept():
        result = application(
            environ, lambda status, headers, exc_info=None: started.append((status, headers))
        )
        try:
            body = b"".join(result)
        finally:
            result.close()
    status, header_list = started[0]
    return int(status.split()[0]), comparable(header_list), body


def comparable(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return sorted((name.lower(), value) for name, value in headers if name.lower() != "date")


@pytest.fixture
def stored(client) -> dict:
    response = client.post(
        f"/collections/images?{KEY_QUERY}",
        png_bytes(size=(64, 48), seed=9),
        content_type="image/png",
    )
    assert response.status_code == 201
    return response.json()


@pytest.fixture
def request_log() -> Iterator[list[logging.LogRecord]]:
    """The request log's records and Django's own (``log_response``), at INFO."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    loggers = [logging.getLogger("requests"), logging.getLogger("django.request")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    yield records
    for log, level in zip(loggers, levels, strict=True):
        log.removeHandler(handler)
        log.setLevel(level)


def log_lines(records: list[logging.LogRecord]) -> list[tuple[str, object]]:
    """The records, the request line without its timing."""
    lines: list[tuple[str, object]] = []
    for record in records:
        message = record.getMessage()
        if record.name == "requests":
            line = json.loads(message)
            line.pop("ms")
            lines.append((record.name, line))
        else:
            lines.append((record.name, message))
    return lines


def requests_counted(method: str, route: str, status: int) -> float:
    labels = {"method": method, "route": route, "status": str(status)}
    return REGISTRY.get_sample_value("http_requests_total", labels) or 0.0


def cases(image_id: str, sha256: str) -> list[tuple[str, str, dict[str, str]]]:
    by_id = f"/collections/images/{image_id}"
    by_key = f"/collections/images?{KEY_QUERY}"
    return [
        ("GET", by_id, {}),
        ("GET", by_key, {}),
        ("HEAD", by_id, {}),
        ("HEAD", by_key, {}),
        ("GET", by_id, {"If-None-Match": f'"{sha256}"'}),
        ("GET", by_key, {"If-None-Match": f'"{sha256}"'}),
        ("GET", by_id, {"If-Match": '"other"'}),
        ("GET", by_id, {"Range": "bytes=10-99"}),
        ("GET", by_key, {"Range": "bytes=-20"}),
        ("GET", by_id, {"Range": "bytes=999999-"}),
        ("GET", by_id, {"Accept": "application/json"}),
        ("GET", by_id, {"Accept": "application/cbor"}),
        ("GET", by_id, {"Accept": "text/html"}),
        ("GET", f"/collections/images/{uuid.uuid4()}", {}),
        ("GET", f"/collections/images/{uuid.uuid4()}", {"Accept": "application/cbor"}),
        ("GET", "/collections/images?deviceId=cam-1", {}),
        ("GET", "/collections/images?deviceId=cam-1&timestamp=2020-01-01T00:00:00Z", {}),
        ("GET", by_id, {"Host": "evil.example"}),
        ("GET", by_key, {"Host": "evil.example"}),
    ]


def with_id(headers: dict[str, str]) -> dict[str, str]:
    return {"X-Request-ID": REQUEST_ID, **headers}


def test_the_routes_take_the_fast_path_only_when_it_is_on(settings, stored):
    for method, path, headers in cases(stored["id"], stored["sha256"]):
        environ = RequestFactory().generic(method, path, headers=headers).environ
        assert application._route(environ)[0] is not None, (method, path)
        settings.IMAGES_DOWNLOAD_FAST_PATH = False
        assert application._route(environ)[0] is None
        settings.IMAGES_DOWNLOAD_FAST_PATH = True
    for method, path in [
        ("DELETE", f"/collections/images/{stored['id']}"),
        ("POST", "/collections/images"),
        ("OPTIONS", f"/collections/images/{stored['id']}"),
        ("GET", f"/collections/images/{stored['id'].upper()}"),
        ("GET", f"/collections/images/{stored['id']}/thumbnail"),
        ("GET", "/collections/images/"),
        ("GET", "/devices"),
    ]:
        environ = RequestFactory().generic(method, path).environ
        assert application._route(environ)[0] is None, (method, path)


def test_every_answer_log_line_and_count_is_django_s(settings, stored, request_log):
    for method, path, headers in cases(stored["id"], stored["sha256"]):
        route = "unmatched"
        answers, lines, counted = [], [], []
        for fast in (True, False):
            settings.IMAGES_DOWNLOAD_FAST_PATH = fast
            request_log.clear()
            answer = wsgi(method, path, with_id(headers))
            answers.append(answer)
            lines.append(log_lines(request_log))
            route = next(line["route"] for name, line in lines[-1] if name == "requests")
            counted.append(requests_counted(method, route, answer[0]))
        assert answers[0] == answers[1], (method, path, headers)
        assert lines[0] == lines[1], (method, path, headers)
        assert counted[1] == counted[0] + 1
        via_client = Client().generic(method, path, headers=with_id(headers))
        assert via_client.status_code == answers[0][0]
        assert comparable(list(via_client.items())) == answers[0][1]
        assert via_client.content == answers[0][2]
        assert route != "unmatched" or headers.get("Host")


def issue(*args: str) -> str:
    out = io.StringIO()
    call_command("issuetoken", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue().strip()


def test_token_mode_answers_are_django_s(settings, stored):
    settings.IMAGES_AUTH = "token"
    reader, own, other = issue("--reader", "r"), issue("--device", "cam-1"), issue("--device", "x")
    seen = set()
    for credentials in ({}, {"Authorization": "Bearer nope"}, reader, own, other):
        if isinstance(credentials, str):
            credentials = {"Authorization": f"Bearer {credentials}"}
        for method, path, headers in cases(stored["id"], stored["sha256"])[:6]:
            request_headers = with_id({**headers, **credentials})
            settings.IMAGES_DOWNLOAD_FAST_PATH = True
            fast = wsgi(method, path, request_headers)
            settings.IMAGES_DOWNLOAD_FAST_PATH = False
            assert fast == wsgi(method, path, request_headers), (method, path, credentials)
            seen.add(fast[0])
    assert {200, 304, 401, 403} <= seen


def test_a_damaged_image_is_503_through_the_fast_path(settings, client):
    # An image of its own: a sound copy read before would rightly be served
    # from the process's cache of checked bytes (keyed by sha256).
    stored = client.post(
        f"/collections/images?{KEY_QUERY}", png_bytes(size=(50, 40), seed=977), "image/png"
    ).json()
    held = bytes(Image.objects.get(id=stored["id"]).data)
    damaged = held[:100] + bytes([held[100] ^ 1]) + held[101:]
    Image.objects.filter(id=stored["id"]).update(data=damaged)
    answers = []
    for fast in (True, False):
        settings.IMAGES_DOWNLOAD_FAST_PATH = fast
        answers.append(wsgi("GET", f"/collections/images/{stored['id']}", with_id({})))
    assert answers[0] == answers[1]
    status, headers, body = answers[0]
    assert status == 503
    assert "damaged" in json.loads(body)["errors"]["detail"][0]
    assert stored["id"] in body.decode()


# --- Live: two serve processes on one database, with and without the fast path ---


@pytest.fixture
def two_serves(tmp_path) -> Iterator[tuple[int, int, dict]]:
    """Serve with the fast path and without, on one database holding one final image."""
    env = {
        **os.environ,
        "DATABASE_URL": fresh_database_url(tmp_path),
        "SECRET_KEY": "test-only-secret",
        "ALLOWED_HOSTS": "127.0.0.1",
        "REQUEST_LOG_LEVEL": "INFO",
    }
    processes = []
    try:
        fast, fast_port = start_serve(tmp_path, env, workers=1, name="fast")
        processes.append(fast)
        meta = upload_and_wait(fast_port)
        plain, plain_port = start_serve(
            tmp_path, {**env, "IMAGES_DOWNLOAD_FAST_PATH": "0"}, workers=1, name="plain"
        )
        processes.append(plain)
        yield fast_port, plain_port, meta
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def upload_and_wait(port: int) -> dict:
    """One upload, and its metadata once the optimizer has made its bytes final."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/collections/images?{KEY_QUERY}",
        data=png_bytes(size=(64, 48), seed=9),
        headers={"Content-Type": "image/png", "Accept": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        meta = json.loads(response.read())
    deadline = time.monotonic() + 60
    while not meta["optimized"]:
        assert time.monotonic() < deadline, "the optimizer did not finish"
        time.sleep(0.2)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{meta['href']}", headers={"Accept": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            meta = json.loads(response.read())
    return meta


def live(port: int, method: str, path: str, headers: dict[str, str]) -> Answer:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest(method, path, skip_host="Host" in headers)
        for name, value in with_id(headers).items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        body = response.read()
        return response.status, comparable(response.getheaders()), body
    finally:
        connection.close()


def download_counts(port: int) -> dict[str, float]:
    """The request counters of the download routes, by their labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        text = response.read().decode()
    counts = {}
    for line in text.splitlines():
        if line.startswith("http_requests_total{") and "collections/images" in line:
            labels, value = line.rsplit(" ", 1)
            counts[labels] = float(value)
    return counts


def counted_since(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {
        labels: value - before.get(labels, 0.0)
        for labels, value in after.items()
        if value != before.get(labels, 0.0)
    }


def served_lines(log_path: os.PathLike) -> list[dict]:
    lines = []
    with open(log_path) as log:
        for text in log:
            if text.startswith('{"request_id": "fast-path-test"'):
                line = json.loads(text)
                line.pop("ms")
                lines.append(line)
    return lines


def test_serve_answers_the_same_with_and_without_the_fast_path(two_serves, tmp_path):
    fast_port, plain_port, meta = two_serves
    counts = [download_counts(fast_port), download_counts(plain_port)]
    for method, path, headers in cases(meta["id"], meta["sha256"]):
        if "Host" in headers:
            headers = {**headers, "Host": "evil.example"}
        fast = live(fast_port, method, path, headers)
        plain = live(plain_port, method, path, headers)
        assert fast == plain, (method, path, headers)
    fast_counted = counted_since(counts[0], download_counts(fast_port))
    assert fast_counted == counted_since(counts[1], download_counts(plain_port))
    assert sum(fast_counted.values()) == len(cases("x", "y")) - 2  # two had a bad Host
    deadline = time.monotonic() + 10
    while len(served_lines(tmp_path / "plain.log")) < len(cases("x", "y")):
        assert time.monotonic() < deadline, "the request log lines did not arrive"
        time.sleep(0.1)
    assert served_lines(tmp_path / "fast.log") == served_lines(tmp_path / "plain.log")
