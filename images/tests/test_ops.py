"""Operations: health, metrics, request logs (API.md §7)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.django_db


def test_healthz_is_200_when_the_database_answers(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response["Cache-Control"] == "no-store"


def test_healthz_is_503_when_the_database_does_not_answer():
    # A real connection attempt to a port where no database listens.
    script = (
        "import django; django.setup();"
        "from django.test import Client;"
        "r = Client().get('/healthz');"
        "print(r.status_code, r.json()['status'])"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none?connect_timeout=2",
        "ALLOWED_HOSTS": "testserver",
    }
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.split() == ["503", "unavailable"], result.stderr


def test_metrics_count_requests_and_uploads(client, png):
    client.post(
        "/collections/images?deviceId=m&timestamp=2024-01-01T00:00:00Z",
        png,
        content_type="image/png",
    )
    client.get("/collections/images?deviceId=m&timestamp=2024-01-01T00:00:00Z")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    assert 'http_requests_total{method="GET",route="collections/images",status="200"}' in text
    assert "image_upload_bytes_total" in text
    assert "image_compression_saved_bytes_total" in text
    assert 'http_request_duration_seconds_bucket{le="0.001",route="collections/images"}' in text


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def request_log():
    handler = Collect()
    logger = logging.getLogger("requests")
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)


def test_each_request_logs_one_json_line_with_its_request_id(client, request_log):
    response = client.get("/.well-known/core", HTTP_X_REQUEST_ID="abc-123")
    assert response["X-Request-ID"] == "abc-123"
    (line,) = request_log
    entry = json.loads(line)
    assert entry["request_id"] == "abc-123"
    assert (entry["method"], entry["path"], entry["status"]) == ("GET", "/.well-known/core", 200)


def test_a_hostile_request_id_is_replaced(client, request_log):
    response = client.get("/healthz", HTTP_X_REQUEST_ID="x\r\ninjected" + "y" * 500)
    assert len(response["X-Request-ID"]) == 32
    assert json.loads(request_log[0])["request_id"] == response["X-Request-ID"]


def test_check_deploy_is_clean_with_production_settings():
    env = {
        **os.environ,
        "DEBUG": "0",
        "SECRET_KEY": "a-long-random-production-secret-key-0123456789-abcdefghijklmnop",
        "ALLOWED_HOSTS": "images.example.com",
        "SECURE_SSL_REDIRECT": "1",
        "SECURE_HSTS_SECONDS": "31536000",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("mode", "path", "session_runs"),
    [
        ("open", "/healthz", False),
        ("open", "/collections", False),
        ("open", "/devices", False),
        ("open", "/", True),
        ("open", "/accounts/login/", True),
        ("open", "/no-such-page", True),
        ("open", "/collectionsX", True),
        ("open", "/collections/images", False),
        ("token", "/devices", True),
        ("token", "/", True),
    ],
)
def test_sessions_run_on_pages_and_not_on_open_api_routes(settings, mode, path, session_runs):
    """With every session saved on each request, Set-Cookie shows whether the layer ran."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    settings.IMAGES_AUTH = mode
    settings.SESSION_SAVE_EVERY_REQUEST = True
    user = get_user_model().objects.create_user("s", password="a long passphrase", is_staff=True)
    client = Client()
    client.force_login(user)
    response = client.get(path)
    assert response.status_code < 500
    assert (settings.SESSION_COOKIE_NAME in response.cookies) is session_runs
