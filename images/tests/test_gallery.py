"""API.md §8: the gallery pages, rendered by the server (the browser tests drive them too)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html import unescape
from urllib.parse import quote

import pytest
from django.template.defaultfilters import filesizeformat
from django.test import Client

from conftest import png_bytes
from images.models import Image
from images.tests.test_listing import add_images

pytestmark = pytest.mark.django_db

T0 = datetime(2024, 8, 18, 2, 4, 7, tzinfo=UTC)


def upload(client: Client, device: str, timestamp: str, image: bytes | None = None) -> dict:
    response = client.post(
        f"/collections/images?deviceId={quote(device, safe='')}&timestamp={quote(timestamp)}",
        image or png_bytes((40, 30)),
        content_type="image/png",
    )
    assert response.status_code == 201
    return response.json()


def html(response) -> str:
    assert response["Content-Type"].startswith("text/html")
    return response.content.decode()


def links(page: str) -> list[str]:
    return [unescape(href) for href in re.findall(r'href="([^"]*)"', page)]


def images_shown(page: str) -> list[str]:
    return [unescape(src) for src in re.findall(r'<img[^>]*\ssrc="([^"]*)"', page)]


# --- Home ----------------------------------------------------------------------------


def test_an_empty_gallery_says_how_to_send_the_first_image(client):
    page = html(client.get("/"))
    assert "No images yet" in page
    assert 'curl -X POST "http://testserver/collections/images?deviceId=camera-1' in page
    assert "--data-binary @photo.png" in page


def test_home_lists_devices_with_counts_latest_thumbnail_and_time(client):
    upload(client, "cam-a", "2024-08-18T02:04:07Z")
    latest = upload(client, "cam-a", "2024-08-18T03:04:07Z", png_bytes((40, 30), seed=2))
    upload(client, "cam-b", "2024-08-17T00:00:00Z")
    page = html(client.get("/"))
    assert "2 images" in page
    assert "1 image<" in page
    assert f"{latest['href']}/thumbnail?size=256" in images_shown(page)
    assert 'alt="Latest image from cam-a"' in page
    assert '<time datetime="2024-08-18T03:04:07+00:00">2024-08-18 03:04:07 UTC</time>' in page
    assert "/gallery/devices/cam-a" in links(page)
    assert "/gallery/devices/cam-b" in links(page)


def test_home_pages_through_many_devices(client):
    for n in range(30):
        add_images(f"dev-{n:02d}", 1)
    first = html(client.get("/"))
    assert "dev-23" in first
    assert "dev-24" not in first
    more = next(href for href in links(first) if href.startswith("?after="))
    second = html(client.get("/" + more))
    assert "dev-24" in second
    assert "dev-29" in second
    assert "dev-23" not in second


# --- Device page -----------------------------------------------------------------------


def test_a_device_page_shows_its_images_newest_first_as_thumbnails(client):
    rows = add_images("cam", 3)
    page = html(client.get("/gallery/devices/cam"))
    assert "3 images" in page
    assert images_shown(page) == [f"{row.href}/thumbnail?size=256" for row in reversed(rows)]
    assert [href for href in links(page) if href.startswith("/gallery/images/")] == [
        f"/gallery/images/{row.id}" for row in reversed(rows)
    ]
    assert 'alt="Image taken 2024-08-18 02:06:07 UTC"' in page


def test_thumbnails_are_sized_to_keep_the_layout_still(client):
    add_images("cam", 1)  # 20 x 10
    assert 'width="20" height="10"' in html(client.get("/gallery/devices/cam"))


def test_the_date_filter_shows_only_those_days(client):
    add_images("cam", 3, step=86_400)  # Aug 18, 19, 20
    page = html(client.get("/gallery/devices/cam?from=2024-08-19&to=2024-08-19"))
    assert len(images_shown(page)) == 1
    assert "2024-08-19 02:04:07 UTC" in page
    assert '<label for="id_from">From (UTC)</label>' in page
    assert 'type="date" name="from" value="2024-08-19"' in page


def test_a_bad_date_filter_says_what_is_wrong_and_shows_everything(client):
    add_images("cam", 2)
    page = html(client.get("/gallery/devices/cam?from=2024-08-20&to=2024-08-18"))
    assert 'role="alert"' in page
    assert "must not be before From" in page
    assert len(images_shown(page)) == 2


def test_a_device_page_pages_to_older_images_keeping_the_filter(client):
    add_images("cam", 60, step=60)
    first = html(client.get("/gallery/devices/cam?from=2024-08-18"))
    assert len(images_shown(first)) == 48
    older = next(href for href in links(first) if "before=" in href)
    assert "from=2024-08-18" in older
    second = html(client.get("/gallery/devices/cam" + older))
    assert len(images_shown(second)) == 12
    assert "2024-08-18 02:04:07 UTC" in second
    assert not any("before=" in href for href in links(second))


def test_an_unknown_device_page_is_an_html_404(client):
    response = client.get("/gallery/devices/nobody")
    assert response.status_code == 404
    assert "Not found" in html(response)


@pytest.mark.parametrize("device", ["cam 1", "site/cam", "100%", "Kamera-ü", "a?b#c", "x/images"])
def test_device_ids_with_url_special_characters_have_working_pages(client, device):
    add_images(device, 1)
    home = html(client.get("/"))
    device_url = next(href for href in links(home) if href.startswith("/gallery/devices/"))
    response = client.get(device_url)
    assert response.status_code == 200
    assert f"<h1>{device.replace('&', '&amp;')}</h1>" in html(response)


# --- Image page --------------------------------------------------------------------------


def test_an_image_page_shows_the_image_its_metadata_and_actions(client):
    stored = upload(client, "cam", "2024-08-18T02:04:07Z", png_bytes((64, 48), seed=4))
    image = Image.objects.get(id=stored["id"])
    page = html(client.get(f"/gallery/images/{stored['id']}"))
    assert f'<img id="picture" src="{stored["href"]}" width="64" height="48"' in page
    assert 'alt="Image from cam taken 2024-08-18 02:04:07 UTC"' in page
    assert "64 × 48 pixels" in page
    assert f"<dt>Size received</dt><dd>{filesizeformat(image.original_size)}" in page
    assert f"<dt>Size stored</dt><dd>{filesizeformat(image.stored_size)}" in page
    assert "Compression saved" in page
    assert stored["sha256"] in page
    assert f'<a class="button" href="{stored["href"]}" download>Download</a>' in page
    assert f"/gallery/images/{stored['id']}/delete" in links(page)


def test_an_image_page_links_to_its_newer_and_older_neighbours(client):
    rows = add_images("cam", 3)
    page = html(client.get(f"/gallery/images/{rows[1].id}"))
    assert f'<a rel="prev" href="/gallery/images/{rows[2].id}">' in page
    assert f'<a rel="next" href="/gallery/images/{rows[0].id}">' in page


def test_a_format_browsers_cannot_show_gets_a_large_preview(client):
    rows = add_images("cam", 1)
    Image.objects.filter(id=rows[0].id).update(content_type="image/tiff")
    page = html(client.get(f"/gallery/images/{rows[0].id}"))
    assert f"{rows[0].href}/thumbnail?size=1024" in images_shown(page)
    assert "reduced preview" in page


def test_an_unknown_image_page_is_an_html_404(client):
    response = client.get("/gallery/images/00000000-0000-0000-0000-000000000000")
    assert response.status_code == 404
    assert "Not found" in html(response)


# --- Delete ------------------------------------------------------------------------------


def test_delete_asks_for_confirmation_in_a_csrf_protected_form(client):
    rows = add_images("cam", 1)
    response = client.get(f"/gallery/images/{rows[0].id}/delete")
    page = html(response)
    assert "Delete this image?" in page
    assert '<form method="post"' in page
    assert 'name="csrfmiddlewaretoken"' in page
    assert Image.objects.filter(id=rows[0].id).exists()


def test_a_delete_without_the_csrf_token_is_refused():
    rows = add_images("cam", 1)
    response = Client(enforce_csrf_checks=True).post(f"/gallery/images/{rows[0].id}/delete")
    assert response.status_code == 403
    assert Image.objects.filter(id=rows[0].id).exists()


def test_confirming_deletes_and_returns_to_the_device_with_a_message():
    rows = add_images("cam", 2)
    browser = Client(enforce_csrf_checks=True)
    page = browser.get(f"/gallery/images/{rows[0].id}/delete").content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)[1]
    response = browser.post(
        f"/gallery/images/{rows[0].id}/delete", {"csrfmiddlewaretoken": token}, follow=True
    )
    assert response.redirect_chain == [("/gallery/devices/cam", 302)]
    assert not Image.objects.filter(id=rows[0].id).exists()
    assert "Deleted the image from cam taken 2024-08-18 02:04:07 UTC." in html(response)


def test_deleting_a_devices_last_image_returns_home(client):
    rows = add_images("cam", 1)
    response = client.post(f"/gallery/images/{rows[0].id}/delete")
    assert response.status_code == 302
    assert response["Location"] == "/"


def test_deleting_an_image_already_gone_is_an_html_404(client):
    rows = add_images("cam", 1)
    Image.objects.all().delete()
    response = client.post(f"/gallery/images/{rows[0].id}/delete")
    assert response.status_code == 404


def test_pages_refuse_methods_they_do_not_offer(client):
    rows = add_images("cam", 1)
    assert client.post("/").status_code == 405
    assert client.post(f"/gallery/images/{rows[0].id}").status_code == 405
    assert client.delete(f"/gallery/images/{rows[0].id}/delete").status_code == 405


# --- Every page ----------------------------------------------------------------------------


def test_every_page_is_accessible_phone_ready_and_loads_nothing_from_elsewhere(client):
    rows = add_images("cam", 1, start=T0 - timedelta(days=1))
    for url in [
        "/",
        "/gallery/devices/cam",
        f"/gallery/images/{rows[0].id}",
        f"/gallery/images/{rows[0].id}/delete",
    ]:
        response = client.get(url)
        page = html(response)
        assert '<html lang="en">' in page, url
        assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
        assert '<a class="skip-link" href="#main">' in page
        assert '<main id="main"' in page
        # One script, our own, only where the newest images arrive live.
        scripts = re.findall(r"<script[^>]*>", page)
        live = url == "/gallery/devices/cam"
        assert scripts == (['<script src="/static/images/gallery-live.js" defer>'] if live else [])
        assert not re.search(r'(src|href)="(https?:)?//', page), url
        assert all(re.search(r'alt="[^"]+"', tag) for tag in re.findall(r"<img[^>]*>", page))
        assert "default-src 'none'" in response["Content-Security-Policy"]
