"""API.md §15 "Settings and commands refuse malformed values at once, with the reason".

A malformed ``s3://`` location is refused by ``movestorage`` and, the same
way, by ``IMAGES_STORAGE`` when the service starts, as a malformed size is by
``IMAGES_RETENTION_MAX_BYTES`` (``policy set --max-bytes``: test_policy); a
port ``serve`` cannot bind is one line naming it, not a server's traceback.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from hypothesis import given
from hypothesis import strategies as st

from conftest import ROOT, free_port
from images.storage.objects import Bucket

MALFORMED = {
    "S3://images": "not an s3://",
    "s3://images:9000/p": "no port",
    "s3://key:secret@images/p": "no user info",
    "s3://images/p?versionId=1": "no query or fragment",
    "s3://images/p#top": "no query or fragment",
    "s3://Images_2024": "not a bucket name",
    "s3://ab": "not a bucket name",
    "s3://10.0.0.1": "not a bucket name",
    "s3://images/" + "p" * 1100: "the prefix is too long",
}


@pytest.mark.django_db
@pytest.mark.parametrize(("url", "reason"), MALFORMED.items(), ids=list(range(len(MALFORMED))))
def test_movestorage_refuses_a_malformed_location_with_the_reason(url, reason):
    with pytest.raises(CommandError, match=reason):
        call_command("movestorage", to=url)


def manage(tmp_path, *command: str, **env: str) -> subprocess.CompletedProcess:
    """``manage.py command`` on a fresh SQLite file, with ``env`` added; its outcome."""
    return subprocess.run(
        [sys.executable, "manage.py", *command],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("url", "reason"), list(MALFORMED.items())[:3], ids=["scheme", "port", "userinfo"]
)
def test_the_service_refuses_to_start_with_a_malformed_images_storage(tmp_path, url, reason):
    result = manage(tmp_path, "check", IMAGES_STORAGE=url)
    assert result.returncode != 0
    assert "IMAGES_STORAGE" in result.stderr
    assert reason in result.stderr


@pytest.mark.parametrize(
    ("size", "reason"), [("5M", "unknown unit"), ("-1", "not a size"), ("0.5B", "whole number")]
)
def test_the_service_refuses_to_start_with_a_malformed_retention_max_bytes(tmp_path, size, reason):
    result = manage(tmp_path, "check", IMAGES_RETENTION_MAX_BYTES=size)
    assert result.returncode != 0
    assert "IMAGES_RETENTION_MAX_BYTES" in result.stderr
    assert reason in result.stderr


@pytest.mark.parametrize("which", ["--port", "--events-port"])
def test_serve_names_a_port_it_cannot_bind(tmp_path, which):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = {"--port": str(free_port()), "--events-port": str(free_port())}
        ports[which] = str(port)
        options = [item for pair in ports.items() for item in pair]
        result = manage(
            tmp_path,
            *("serve", "--host", "127.0.0.1", "--coap-port", "0", *options),
            SECRET_KEY="test-only-secret",
        )
    assert result.returncode != 0
    assert f"127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@given(st.text(max_size=200))
def test_the_storage_url_parser_takes_any_text(url):
    """Fuzzing: a Bucket whose location parses to itself again, or a ValueError; nothing else."""
    try:
        bucket = Bucket.parse("s3://" + url)
    except ValueError:
        return
    assert Bucket.parse(bucket.location(bucket.prefix).rstrip("/")) == bucket
