"""The device page, live, in a real browser: new images appear through the event stream.

Playwright drives Chromium against ``runserver``; images are uploaded over
HTTP from the test while the page stays open.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from PIL import Image as PILImage
from playwright.sync_api import Browser, ConsoleMessage, Page, expect

from conftest import ROOT, LiveServer, fresh_database_url, start_runserver, start_serve, stop
from images.tests import test_gallery_browser as gallery_browser

pytestmark = pytest.mark.slow

# Device ids with a "/" and a non-ASCII letter: both must survive the
# events URL's percent-encoding. Each test has its own device.
WAIT_MS = 10_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_runserver(tmp_path_factory.mktemp("gallery-live"))
    yield server
    stop(server.process)


# One Chromium for this module, launched as the other browser tests launch it.
browser = gallery_browser.browser


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A tab that fails the test on a script error or a console error (a CSP refusal is one).

    Chromium's own request for ``/favicon.ico`` (which we do not serve) is not one.
    """
    page = browser.new_page()
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []

    def console(message: ConsoleMessage) -> None:
        where = message.location.get("url", "")
        if message.type == "error" and not where.endswith("/favicon.ico"):
            errors.append(f"{message.text} ({where})")

    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", console)
    yield page
    page.close()
    assert errors == []


def png(width: int, height: int, shade: int) -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (width, height), (shade, 120, 200 - shade)).save(out, "PNG")
    return out.getvalue()


def upload(server: LiveServer, device: str, timestamp: str, body: bytes, token: str = "") -> str:
    """POST raw PNG bytes; the new image's id."""
    query = f"deviceId={quote(device, safe='')}&timestamp={quote(timestamp, safe='')}"
    request = urllib.request.Request(
        f"{server.url}/collections/images?{query}",
        data=body,
        method="POST",
        headers={"Content-Type": "image/png"}
        | ({"Authorization": f"Bearer {token}"} if token else {}),
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["id"]


def open_live(page: Page, server: LiveServer, device: str, query: str = "") -> None:
    """Open the device's page and wait until its event stream is open.

    The stream's headers come after its subscription is made (with its first
    bytes), so an image uploaded after this returns is one the page hears of.
    """
    with page.expect_response(lambda response: response.url.endswith("/events")) as stream:
        page.goto(f"{server.url}/gallery/devices/{quote(device, safe='')}{query}")
    assert stream.value.status == 200
    # Set before any upload: still there afterwards means the page never reloaded.
    page.evaluate("window.sameDocument = true")


def test_a_new_image_appears_at_the_top_without_a_reload(server, page):
    device = "porch/cam é"
    first = upload(server, device, "2024-09-01T08:00:00Z", png(300, 200, 10))
    open_live(page, server, device)
    tiles = page.locator("ul.grid > li")
    expect(tiles).to_have_count(1)
    expect(page.locator("#image-count")).to_have_text("1 image")

    new = upload(server, device, "2024-09-01T09:30:00Z", png(200, 400, 90))

    expect(tiles).to_have_count(2)
    top = tiles.first
    expect(top).to_have_attribute("data-id", new)
    expect(tiles.nth(1)).to_have_attribute("data-id", first)
    expect(top.get_by_role("link")).to_have_attribute("href", f"/gallery/images/{new}")
    expect(top.locator("time")).to_have_text("2024-09-01 09:30:00 UTC")
    thumbnail = top.locator("img")
    expect(thumbnail).to_have_attribute("alt", "Image taken 2024-09-01 09:30:00 UTC")
    expect(thumbnail).to_have_attribute("src", f"/collections/images/{new}/thumbnail?size=256")
    # The size the server would have rendered: 256 on the long side.
    assert (thumbnail.get_attribute("width"), thumbnail.get_attribute("height")) == ("128", "256")
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=thumbnail.element_handle()
    )
    expect(page.locator("#image-count")).to_have_text("2 images")
    expect(page.locator("#image-last time")).to_have_text("2024-09-01 09:30:00 UTC")
    assert page.evaluate("window.sameDocument") is True


def test_an_image_from_another_device_does_not_appear(server, page):
    device, other = "gate/cam é", "gate/cam e"
    first = upload(server, device, "2024-09-02T08:00:00Z", png(64, 64, 20))
    open_live(page, server, device)

    theirs = upload(server, other, "2024-09-02T10:00:00Z", png(64, 64, 150))
    # Then one for this device: once it is shown, the other one had its chance.
    mine = upload(server, device, "2024-09-02T11:00:00Z", png(64, 64, 200))

    tiles = page.locator("ul.grid > li")
    expect(tiles.first).to_have_attribute("data-id", mine)
    expect(tiles).to_have_count(2)
    expect(tiles.nth(1)).to_have_attribute("data-id", first)
    expect(page.locator(f'li[data-id="{theirs}"]')).to_have_count(0)
    expect(page.locator("#image-count")).to_have_text("2 images")
    assert page.evaluate("window.sameDocument") is True


def test_a_filtered_page_adds_only_images_in_its_dates(server, page):
    device = "shed/cam ü"
    upload(server, device, "2024-09-01T12:00:00Z", png(64, 64, 30))
    open_live(page, server, device, "?from=2024-09-03")
    expect(page.get_by_text("No images in these dates.")).to_be_visible()

    before = upload(server, device, "2024-09-02T23:59:59Z", png(64, 64, 60))
    inside = upload(server, device, "2024-09-03T00:00:00Z", png(64, 64, 90))

    tiles = page.locator("ul.grid > li")
    expect(tiles).to_have_count(1)
    expect(tiles.first).to_have_attribute("data-id", inside)
    expect(page.locator(f'li[data-id="{before}"]')).to_have_count(0)
    expect(page.get_by_text("No images in these dates.")).to_have_count(0)
    # The count is the device's, filter or not.
    expect(page.locator("#image-count")).to_have_text("3 images")
    assert page.evaluate("window.sameDocument") is True


def test_an_older_page_does_not_listen(server, page):
    device = "barn/cam ø"
    upload(server, device, "2024-09-04T12:00:00Z", png(64, 64, 40))
    response = page.goto(
        f"{server.url}/gallery/devices/{quote(device, safe='')}?before=2024-09-05T00:00:00Z"
    )
    expect(page.locator("ul.grid > li")).to_have_count(1)
    assert page.locator("script").count() == 0
    assert "script-src" not in response.headers["content-security-policy"]


def test_under_serve_a_logged_in_staff_page_hears_the_stream_listener(tmp_path, page):
    """Token mode under ``serve``: the page (API port) opens the stream on the listener's
    port, with the staff session's cookie; the listener allows that origin only."""
    database_url = fresh_database_url(tmp_path)
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SECRET_KEY": "test-only-secret",
        "ALLOWED_HOSTS": "127.0.0.1",
        "IMAGES_AUTH": "token",
        "IMAGES_OPTIMIZE": "inline",
        "DJANGO_SUPERUSER_PASSWORD": "a long passphrase",
    }
    process, port = start_serve(tmp_path, env, workers=1)
    try:

        def manage(*command: str) -> str:
            return subprocess.run(
                [sys.executable, "manage.py", *command],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout.strip()

        manage("createsuperuser", "--noinput", "--username", "ops", "--email", "ops@example.org")
        token = manage("issuetoken", "--device", "yard").split()[-1]
        server = LiveServer(port, database_url, process)
        first = upload(server, "yard", "2024-09-05T08:00:00Z", png(64, 64, 10), token)

        page.goto(f"{server.url}/gallery/devices/yard")
        page.get_by_label("Username").fill("ops")
        page.get_by_label("Password").fill("a long passphrase")
        with page.expect_response(lambda response: response.url.endswith("/events")) as stream:
            page.get_by_role("button", name="Log in").click()
        assert stream.value.status == 200
        assert not stream.value.url.startswith(server.url)  # the listener's own port
        page.evaluate("window.sameDocument = true")

        new = upload(server, "yard", "2024-09-05T09:00:00Z", png(64, 64, 99), token)
        tiles = page.locator("ul.grid > li")
        expect(tiles.first).to_have_attribute("data-id", new)
        expect(tiles.nth(1)).to_have_attribute("data-id", first)
        assert page.evaluate("window.sameDocument") is True
        page.close()  # before the server goes: its stream ends with it
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
