"""Access control (API.md §6, §8): token mode's rules on every endpoint, and open mode unchanged."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime
from urllib.parse import quote

import cbor2
import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from conftest import ROOT, png_bytes, start_runserver, stop
from images import services
from images.models import Image, Token
from images.tokens import token_issue, token_revoke

pytestmark = pytest.mark.django_db

TS = "2024-08-18T02:04:07Z"
KEY = f"deviceId=cam-1&timestamp={quote(TS)}"
CHALLENGE = 'Bearer realm="images"'
INVALID = 'Bearer realm="images", error="invalid_token"'


@pytest.fixture
def token_mode(settings) -> None:
    settings.IMAGES_AUTH = "token"


@pytest.fixture
def image() -> Image:
    """cam-1's image at TS, stored through the service (no HTTP, no credentials)."""
    stamp = datetime(2024, 8, 18, 2, 4, 7, tzinfo=UTC)
    return services.image_ingest(device_id="cam-1", timestamp=stamp, data=png_bytes()).image


def bearer(kind: str, subject: str) -> dict[str, str]:
    _, raw = token_issue(kind=kind, subject=subject)
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


@pytest.fixture
def staff_client() -> Client:
    user = get_user_model().objects.create_user("ops", password="a long passphrase", is_staff=True)
    client = Client()
    client.force_login(user)
    return client


WRONG = {"HTTP_AUTHORIZATION": "Bearer img_not-a-token-we-issued"}


def credentials(who: str) -> dict[str, str]:
    """The headers of ``who``: nobody, a wrong token, a reader, or the device named."""
    if who == "none":
        return {}
    if who == "wrong":
        return WRONG
    if who == "reader":
        return bearer(Token.Kind.READER, "dashboard")
    return bearer(Token.Kind.DEVICE, who)


def read_urls(image: Image) -> list[str]:
    return [
        f"/collections/images?{KEY}",
        image.href,
        f"{image.href}/thumbnail?size=32",
        "/devices",
        "/devices/cam-1/images",
    ]


# --- Reads -------------------------------------------------------------------------


@pytest.mark.usefixtures("token_mode")
@pytest.mark.parametrize("method", ["get", "head"])
def test_reads_without_a_token_are_401_with_a_bearer_challenge(client, image, method):
    for url in read_urls(image):
        response = getattr(client, method)(url)
        assert response.status_code == 401, url
        assert response["WWW-Authenticate"] == CHALLENGE, url
        if method == "get":
            assert list(response.json()["errors"]) == ["detail"], url


@pytest.mark.usefixtures("token_mode")
@pytest.mark.parametrize(
    "authorization",
    ["Bearer img_not-a-token-we-issued", "Bearer ", "Bearer a b", "bearer " + "x" * 300],
)
def test_reads_with_a_wrong_or_malformed_token_are_401_invalid_token(client, image, authorization):
    for url in read_urls(image):
        response = client.get(url, HTTP_AUTHORIZATION=authorization)
        assert response.status_code == 401, url
        assert response["WWW-Authenticate"] == INVALID, url


@pytest.mark.usefixtures("token_mode")
def test_another_authorization_scheme_counts_as_no_credentials(client, image):
    response = client.get(image.href, HTTP_AUTHORIZATION="Basic b3BzOnNlY3JldA==")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == CHALLENGE


@pytest.mark.usefixtures("token_mode")
@pytest.mark.parametrize("who", ["reader", "cam-1"])
def test_a_reader_and_the_images_own_device_read_them(client, image, who):
    headers = credentials(who)
    for url in read_urls(image):
        assert client.get(url, **headers).status_code == 200, url
        assert client.head(url, **headers).status_code == 200, url
    metadata = client.get(image.href, HTTP_ACCEPT="application/json", **headers)
    assert metadata.json()["deviceId"] == "cam-1"


@pytest.mark.usefixtures("token_mode")
def test_a_device_token_reads_only_its_own_devices_images(client, image):
    """API.md §15: a stolen camera exposes only its own images."""
    headers = credentials("cam-2")
    for url in [url for url in read_urls(image) if url != "/devices"]:
        assert client.get(url, **headers).status_code == 403, url
        assert client.head(url, **headers).status_code == 403, url
    assert client.get(image.href, HTTP_ACCEPT="application/json", **headers).status_code == 403
    # The device list shows it its own device only (here: none, it sent nothing).
    assert client.get("/devices", **headers).json()["items"] == []
    own = client.get("/devices", **credentials("cam-1")).json()["items"]
    assert [device["deviceId"] for device in own] == ["cam-1"]


@pytest.mark.usefixtures("token_mode")
def test_a_staff_session_reads_everything(staff_client, image):
    for url in read_urls(image):
        assert staff_client.get(url).status_code == 200, url


@pytest.mark.usefixtures("token_mode")
def test_another_users_session_is_no_credentials(client, image):
    user = get_user_model().objects.create_user("visitor", password="a long passphrase")
    client.force_login(user)
    assert client.get(image.href).status_code == 401


@pytest.mark.usefixtures("token_mode")
def test_a_revoked_token_no_longer_reads(client, image):
    _, raw = token_issue(kind=Token.Kind.READER, subject="dashboard")
    assert client.get(image.href, HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200
    token_revoke(raw_or_id=raw)
    response = client.get(image.href, HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == INVALID


@pytest.mark.usefixtures("token_mode")
def test_unknown_images_are_401_before_404_so_nothing_leaks(client):
    assert client.get("/collections/images/0b0e3d0e-6c4f-4c51-9a1b-4d2c1f0e9a77").status_code == 401
    assert client.get("/devices/nobody/images").status_code == 401


# --- Caching in token mode ---------------------------------------------------------


@pytest.mark.usefixtures("token_mode")
def test_token_mode_downloads_are_private_and_vary_on_authorization(client, image):
    headers = credentials("reader")
    for url in (f"/collections/images?{KEY}", image.href, f"{image.href}/thumbnail"):
        response = client.get(url, **headers)
        assert response["Cache-Control"].startswith("private, "), url
        assert "public" not in response["Cache-Control"], url
        assert "Authorization" in response["Vary"], url
        revalidated = client.get(url, HTTP_IF_NONE_MATCH=response["ETag"], **headers)
        assert revalidated.status_code == 304, url
        assert revalidated["Cache-Control"].startswith("private, "), url


def test_open_mode_is_unchanged_public_and_ignores_authorization(client, image):
    for url in (f"/collections/images?{KEY}", image.href, f"{image.href}/thumbnail"):
        response = client.get(url, HTTP_AUTHORIZATION="Bearer img_not-a-token-we-issued")
        assert response.status_code == 200, url
        assert response["Cache-Control"].startswith("public, "), url
        assert "Authorization" not in response.get("Vary", ""), url
    assert client.get("/devices").status_code == 200
    assert client.delete(image.href).status_code == 204


# --- Uploads -----------------------------------------------------------------------


def json_upload(device: str = "cam-1", image: bytes | None = None) -> str:
    data = base64.b64encode(image or png_bytes()).decode()
    return json.dumps({"deviceId": device, "timestamp": TS, "imageData": data})


@pytest.mark.usefixtures("token_mode")
@pytest.mark.parametrize(
    ("who", "status"),
    [("none", 401), ("wrong", 401), ("reader", 403), ("cam-2", 403), ("cam-1", 201)],
)
def test_a_json_upload_needs_the_device_token_of_its_device_id(client, who, status):
    response = client.post(
        "/collections/images", json_upload(), content_type="application/json", **credentials(who)
    )
    assert response.status_code == status
    if status == 401:
        assert response["WWW-Authenticate"].startswith("Bearer")
    if status != 201:
        assert list(response.json()["errors"]) == ["detail"]
        assert not Image.objects.exists()


@pytest.mark.usefixtures("token_mode")
@pytest.mark.parametrize(
    ("who", "status"),
    [("none", 401), ("wrong", 401), ("reader", 403), ("cam-2", 403), ("cam-1", 201)],
)
def test_a_raw_upload_needs_the_device_token_of_the_query_device_id(client, who, status):
    response = client.post(
        f"/collections/images?{KEY}", png_bytes(), content_type="image/png", **credentials(who)
    )
    assert response.status_code == status


@pytest.mark.usefixtures("token_mode")
@pytest.mark.parametrize(("who", "status"), [("cam-2", 403), ("cam-1", 201)])
def test_a_cbor_upload_needs_the_device_token_of_its_device_id(client, who, status):
    body = cbor2.dumps({"deviceId": "cam-1", "timestamp": TS, "imageData": png_bytes()})
    response = client.post(
        "/collections/images", body, content_type="application/cbor", **credentials(who)
    )
    assert response.status_code == status


@pytest.mark.usefixtures("token_mode")
def test_a_staff_session_does_not_upload(staff_client):
    response = staff_client.post(
        "/collections/images", json_upload(), content_type="application/json"
    )
    assert response.status_code == 403


@pytest.mark.usefixtures("token_mode")
def test_another_devices_token_is_refused_before_the_image_is_looked_at(client):
    """Not an image at all: the wrong device learns only 403, and no decoding happens."""
    body = json.dumps({"deviceId": "cam-1", "timestamp": TS, "imageData": "bm90IGFuIGltYWdl"})
    headers = credentials("cam-2")
    response = client.post("/collections/images", body, content_type="application/json", **headers)
    assert response.status_code == 403
    own = credentials("cam-1")
    response = client.post("/collections/images", body, content_type="application/json", **own)
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["imageData"]


@pytest.mark.usefixtures("token_mode")
def test_fields_are_validated_before_the_device_is_compared(client):
    body = json.dumps({"deviceId": "", "timestamp": TS, "imageData": "AAAA"})
    response = client.post(
        "/collections/images", body, content_type="application/json", **credentials("cam-1")
    )
    assert response.status_code == 400
    assert "deviceId" in response.json()["errors"]


@pytest.fixture(scope="module")
def token_server(tmp_path_factory):
    server = start_runserver(tmp_path_factory.mktemp("token"), {"IMAGES_AUTH": "token"})
    yield server
    stop(server.process)


def answer_to_headers_alone(port: int, head: str) -> bytes:
    """What the server says to a request whose promised body never comes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode("latin-1"))
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
        return answer


@pytest.mark.parametrize(
    ("content_type", "query"), [("image/png", f"?{KEY}"), ("application/json", "")]
)
def test_an_upload_without_a_token_is_refused_before_its_body_is_read(
    token_server, content_type, query
):
    """The server answers at once, although the 10 MB body it was promised never arrives."""
    answer = answer_to_headers_alone(
        token_server.port,
        f"POST /collections/images{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: 10000000\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 401 ")
    assert b"WWW-Authenticate: Bearer" in answer


def test_a_raw_upload_as_another_device_is_refused_before_its_body_is_read(token_server):
    raw = token_server_token(token_server, "--device", "cam-2")
    answer = answer_to_headers_alone(
        token_server.port,
        f"POST /collections/images?{KEY} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {raw}\r\n"
        "Content-Type: image/png\r\nContent-Length: 10000000\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 403 ")


def token_server_token(server, *args: str) -> str:
    """A token from ``manage.py issuetoken``, in the live server's database."""
    done = subprocess.run(
        [sys.executable, "manage.py", "issuetoken", *args],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": server.database_url},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


# --- Delete ------------------------------------------------------------------------


@pytest.mark.usefixtures("token_mode")
@pytest.mark.parametrize(
    ("who", "status"),
    [("none", 401), ("wrong", 401), ("reader", 403), ("cam-2", 403), ("cam-1", 204)],
)
def test_only_the_images_device_deletes_it_with_a_token(client, image, who, status):
    response = client.delete(image.href, **credentials(who))
    assert response.status_code == status
    assert Image.objects.filter(id=image.id).exists() == (status != 204)


@pytest.mark.usefixtures("token_mode")
def test_a_staff_session_deletes(staff_client, image):
    assert staff_client.delete(image.href).status_code == 204
    assert staff_client.delete(image.href).status_code == 404


@pytest.mark.usefixtures("token_mode")
def test_a_staff_sessions_delete_needs_the_csrf_token(image):
    user = get_user_model().objects.create_user("ops", password="a long passphrase", is_staff=True)
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    response = client.delete(image.href)
    assert response.status_code == 403
    assert "CSRF" in response.json()["errors"]["detail"][0]
    assert Image.objects.filter(id=image.id).exists()


# --- Open in every mode ------------------------------------------------------------


@pytest.mark.usefixtures("token_mode")
@pytest.mark.parametrize(
    "url", ["/.well-known/core", "/collections", "/healthz", "/metrics", "/api/schema", "/api/docs"]
)
def test_discovery_health_metrics_and_the_schema_stay_open(client, url):
    assert client.get(url).status_code == 200


# --- The gallery -------------------------------------------------------------------


@pytest.mark.usefixtures("token_mode")
@pytest.mark.parametrize("path", ["/", "/gallery/devices/cam-1", "gallery-image", "gallery-delete"])
def test_the_gallery_sends_strangers_to_the_login_page(client, image, path):
    path = {
        "gallery-image": f"/gallery/images/{image.id}",
        "gallery-delete": f"/gallery/images/{image.id}/delete",
    }.get(path, path)
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={quote(path)}"


@pytest.mark.usefixtures("token_mode")
def test_staff_see_the_gallery_and_its_images(staff_client, image):
    page = staff_client.get(f"/gallery/images/{image.id}")
    assert page.status_code == 200
    assert image.href in page.content.decode()
    assert staff_client.get(image.href).status_code == 200
    assert staff_client.get(f"{image.href}/thumbnail?size=256").status_code == 200
    assert staff_client.get("/").status_code == 200


@pytest.mark.usefixtures("token_mode")
def test_a_reader_token_sees_the_gallery_but_does_not_delete(client, image):
    headers = credentials("reader")
    assert client.get("/", **headers).status_code == 200
    assert client.get(f"/gallery/images/{image.id}", **headers).status_code == 200
    response = client.post(f"/gallery/images/{image.id}/delete", **headers)
    assert response.status_code == 403
    assert Image.objects.filter(id=image.id).exists()


@pytest.mark.usefixtures("token_mode")
def test_staff_delete_from_the_gallery(staff_client, image):
    response = staff_client.post(f"/gallery/images/{image.id}/delete")
    assert response.status_code == 302
    assert not Image.objects.filter(id=image.id).exists()


@pytest.mark.usefixtures("token_mode")
def test_the_login_page_logs_staff_in_and_returns_to_the_gallery(client, image):
    get_user_model().objects.create_user("ops", password="a long passphrase", is_staff=True)
    page = client.get("/accounts/login/?next=/gallery/devices/cam-1")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'name="username"' in html
    assert 'name="password"' in html
    assert "csrfmiddlewaretoken" in html
    assert "default-src 'none'" in page["Content-Security-Policy"]
    response = client.post(
        "/accounts/login/",
        {"username": "ops", "password": "a long passphrase", "next": "/gallery/devices/cam-1"},
    )
    assert response.status_code == 302
    assert response["Location"] == "/gallery/devices/cam-1"
    assert client.get("/gallery/devices/cam-1").status_code == 200


@pytest.mark.usefixtures("token_mode")
def test_the_login_page_refuses_users_who_are_not_staff(client):
    get_user_model().objects.create_user("visitor", password="a long passphrase")
    response = client.post(
        "/accounts/login/", {"username": "visitor", "password": "a long passphrase"}
    )
    assert response.status_code == 200
    assert "may not use the gallery" in response.content.decode()
    assert client.get("/").status_code == 302


@pytest.mark.usefixtures("token_mode")
def test_a_wrong_password_is_refused(client):
    get_user_model().objects.create_user("ops", password="a long passphrase", is_staff=True)
    response = client.post("/accounts/login/", {"username": "ops", "password": "guess"})
    assert response.status_code == 200
    assert client.get("/").status_code == 302


def test_the_open_gallery_needs_no_login(client, image):
    assert client.get("/").status_code == 200
    assert client.get(f"/gallery/images/{image.id}").status_code == 200
