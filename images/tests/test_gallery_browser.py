"""The gallery in a real browser: Playwright drives Chromium against ``runserver``.

Screenshots of every page go to ``$SCREENSHOT_DIR`` (or the test's temporary
directory); their paths are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from PIL import Image as PILImage
from PIL import ImageDraw
from playwright.sync_api import Browser, Page, expect, sync_playwright

from conftest import LiveServer, start_runserver, stop

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DEVICE = "garden/cam ü"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_runserver(tmp_path_factory.mktemp("gallery"))
    yield server
    stop(server.process)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("SCREENSHOT_DIR") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def shoot(page: Page, directory: Path, name: str) -> None:
    path = directory / f"{name}.png"
    page.screenshot(path=path, full_page=True)
    print(f"screenshot: {path}")


def http(server: LiveServer, method: str, path: str, body: bytes | None = None) -> bytes:
    request = urllib.request.Request(
        server.url + path, data=body, method=method, headers={"Content-Type": "image/png"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read()


def scene(seed: int) -> bytes:
    """A small landscape PNG (sky, sun, hills) that differs by ``seed``."""
    image = PILImage.new("RGB", (320, 200))
    draw = ImageDraw.Draw(image)
    for y in range(200):
        draw.line([(0, y), (320, y)], fill=(40 + y // 4, 110 + y // 3, 200 - seed * 20))
    draw.ellipse([200 - seed * 60, 30, 250 - seed * 60, 80], fill=(255, 210, 90))
    draw.polygon(
        [(0, 200), (0, 140), (110, 100 + seed * 10), (320, 150), (320, 200)], (60, 130, 70)
    )
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def upload(server: LiveServer, timestamp: str, seed: int) -> None:
    query = f"deviceId={quote(DEVICE, safe='')}&timestamp={quote(timestamp, safe='')}"
    http(server, "POST", f"/collections/images?{query}", scene(seed))


def expect_images_loaded(page: Page, selector: str) -> None:
    page.wait_for_function(
        """selector => [...document.querySelectorAll(selector)]
            .every(img => img.complete && img.naturalWidth > 0)""",
        arg=selector,
    )


def test_a_person_finds_opens_downloads_and_deletes_an_image(server, browser, screenshots):
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    page.goto(server.url + "/")
    expect(page.get_by_role("heading", name="No images yet")).to_be_visible()
    shoot(page, screenshots, "1-home-empty")

    upload(server, "2024-08-18T02:04:07Z", seed=1)
    upload(server, "2024-08-18T03:04:07Z", seed=2)
    # The API listing's href (with %2F in it) works through a real WSGI server too.
    listing = json.loads(http(server, "GET", "/devices"))["items"][0]["href"]
    assert listing == "/devices/garden%2Fcam%20%C3%BC/images"
    assert len(json.loads(http(server, "GET", listing))["items"]) == 2
    page.reload()
    card = page.get_by_role("listitem").filter(has_text=DEVICE)
    expect(card).to_contain_text("2 images")
    expect_images_loaded(page, ".card img")
    assert page.evaluate("getComputedStyle(document.querySelector('.grid')).display") == "grid"
    shoot(page, screenshots, "2-home")

    card.get_by_role("link").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(DEVICE)
    expect(page.locator(".tile img")).to_have_count(2)
    expect_images_loaded(page, ".tile img")
    shoot(page, screenshots, "3-device")

    page.get_by_role("link", name="Image taken 2024-08-18 03:04:07 UTC").click()
    picture = page.locator("#picture")
    expect(picture).to_be_visible()
    expect_images_loaded(page, "#picture")
    assert picture.evaluate("img => img.naturalWidth") == 320
    shoot(page, screenshots, "4-image")

    href = picture.get_attribute("src")
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download").click()
    download = download_info.value
    assert Path(download.path()).read_bytes() == http(server, "GET", href)
    # The real name from filename*, with the "/" a file name cannot hold replaced.
    assert download.suggested_filename == "garden_cam ü_20240818T030407Z.png"

    page.get_by_role("link", name="Delete…").click()
    expect(page.get_by_role("heading", name="Delete this image?")).to_be_visible()
    shoot(page, screenshots, "5-delete-confirm")
    page.get_by_role("button", name="Delete permanently").click()
    expect(page.get_by_role("status")).to_contain_text("Deleted the image from garden/cam ü")
    expect(page.locator(".tile img")).to_have_count(1)
    shoot(page, screenshots, "6-after-delete")
    with pytest.raises(urllib.error.HTTPError) as gone:
        http(server, "GET", href)
    assert gone.value.code == 404
    page.close()


def test_on_a_phone_the_gallery_fits_and_works_from_the_keyboard(server, browser, screenshots):
    upload(server, "2024-08-19T10:00:00Z", seed=3)
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True
    )
    page = context.new_page()
    page.goto(server.url + "/")
    fits = "document.documentElement.scrollWidth <= window.innerWidth"
    assert page.evaluate(fits)
    shoot(page, screenshots, "7-phone-home")

    # Tab from the top: the skip link comes first, then the way to the device.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip-link"
    for _ in range(10):
        page.keyboard.press("Tab")
        if "/gallery/devices/" in page.evaluate("document.activeElement.href || ''"):
            break
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text(DEVICE)
    assert page.evaluate(fits)
    shoot(page, screenshots, "8-phone-device")

    page.locator(".tile").first.focus()
    page.keyboard.press("Enter")
    expect_images_loaded(page, "#picture")
    assert page.evaluate(fits)
    shoot(page, screenshots, "9-phone-image")
    context.close()


def test_the_device_page_downloads_the_filtered_images_as_one_tar(server, browser, tmp_path):
    device = "yard cam"
    for day, seed in (("20", 1), ("21", 2), ("22", 3)):
        query = f"deviceId={quote(device)}&timestamp=2024-08-{day}T08:00:00Z"
        http(server, "POST", f"/collections/images?{query}", scene(seed))
    page = browser.new_page()
    page.goto(server.url + f"/gallery/devices/{quote(device)}")
    page.get_by_label("From (UTC)").fill("2024-08-21")
    page.get_by_label("To (UTC)").fill("2024-08-22")
    page.get_by_role("button", name="Show").click()
    expect(page.locator(".tile img")).to_have_count(2)
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download all (tar)").click()
    download = download_info.value
    assert download.suggested_filename == "yard cam.tar"
    with tarfile.open(download.path()) as archive:
        names = archive.getnames()
    assert names == [
        "yard_cam_20240821T080000Z.png",
        "yard_cam_20240821T080000Z.png.json",
        "yard_cam_20240822T080000Z.png",
        "yard_cam_20240822T080000Z.png.json",
    ]
    page.close()
