"""Thumbnails (API.md §8): the pure maker, and GET /collections/images/{id}/thumbnail."""

from __future__ import annotations

import io

import pytest
from django.core.cache import cache
from PIL import Image as PILImage

from conftest import png_bytes
from images.compression.thumbnail import thumbnail_make

WEBP, JPEG = "image/webp", "image/jpeg"


def encoded(image: PILImage.Image, fmt: str = "PNG", **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def decoded(data: bytes) -> PILImage.Image:
    image = PILImage.open(io.BytesIO(data))
    image.load()
    return image


# --- The maker (no Django) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("original", "size", "expected"),
    [
        ((400, 200), 100, (100, 50)),
        ((200, 400), 100, (50, 100)),
        ((300, 300), 256, (256, 256)),
        ((1000, 3), 16, (16, 1)),
        ((300, 200), 1024, (300, 200)),
    ],
)
@pytest.mark.parametrize("content_type", [WEBP, JPEG])
def test_a_thumbnail_fits_the_size_keeps_the_aspect_ratio_and_is_never_enlarged(
    original, size, expected, content_type
):
    made = thumbnail_make(png_bytes(original), size=size, content_type=content_type)
    assert (made.width, made.height) == expected
    result = decoded(made.data)
    assert result.size == expected
    assert result.format == {WEBP: "WEBP", JPEG: "JPEG"}[content_type]
    assert made.content_type == content_type


def test_webp_keeps_transparency_and_jpeg_lays_it_on_white():
    image = PILImage.new("RGBA", (40, 40), (255, 0, 0, 0))
    image.paste((0, 0, 255, 255), (0, 0, 20, 40))
    data = encoded(image)
    webp = decoded(thumbnail_make(data, size=20, content_type=WEBP).data)
    assert webp.mode == "RGBA"
    assert webp.getpixel((18, 10))[3] == 0
    jpeg = decoded(thumbnail_make(data, size=20, content_type=JPEG).data)
    assert jpeg.mode == "RGB"
    assert all(channel > 240 for channel in jpeg.getpixel((18, 10)))
    assert jpeg.getpixel((2, 10))[2] > 200


def test_a_palette_gif_with_transparency_keeps_it_in_webp():
    image = PILImage.new("P", (30, 30), 0)
    data = encoded(image, "GIF", transparency=0)
    assert decoded(thumbnail_make(data, size=16, content_type=WEBP).data).mode == "RGBA"


def test_16_bit_grey_is_scaled_to_8_bits_not_clipped():
    image = PILImage.new("I;16", (32, 32), 32768)
    made = decoded(thumbnail_make(encoded(image), size=16, content_type=JPEG).data)
    assert 120 <= made.getpixel((8, 8)) <= 136


def test_exif_orientation_is_applied_as_browsers_show_the_full_image():
    exif = PILImage.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated 90° clockwise
    data = encoded(PILImage.new("RGB", (200, 100), "green"), "JPEG", exif=exif)
    made = thumbnail_make(data, size=100, content_type=WEBP)
    assert (made.width, made.height) == (50, 100)


def test_an_animation_gives_its_first_frame():
    frames = [PILImage.new("RGB", (20, 20), colour) for colour in ("red", "blue")]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=100)
    made = decoded(thumbnail_make(out.getvalue(), size=16, content_type=JPEG).data)
    red, green, blue = made.getpixel((8, 8))
    assert red > 200
    assert blue < 60


@pytest.mark.parametrize(("size", "content_type"), [(15, WEBP), (1025, WEBP), (64, "image/png")])
def test_a_size_out_of_bounds_or_another_format_is_refused(size, content_type):
    with pytest.raises(ValueError, match="size|thumbnails"):
        thumbnail_make(png_bytes(), size=size, content_type=content_type)


# --- Over HTTP ---------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _empty_cache() -> None:
    cache.clear()


@pytest.fixture
def stored(client) -> dict:
    response = client.post(
        "/collections/images?deviceId=cam&timestamp=2024-08-18T02%3A04%3A07Z",
        png_bytes((300, 200), seed=3),
        content_type="image/png",
    )
    assert response.status_code == 201
    return response.json()


def thumbnail_url(stored: dict, query: str = "") -> str:
    return f"{stored['href']}/thumbnail{query}"


@pytest.mark.django_db
def test_the_default_thumbnail_is_a_256_pixel_webp(client, stored):
    response = client.get(thumbnail_url(stored))
    assert response.status_code == 200
    assert response["Content-Type"] == WEBP
    assert decoded(response.content).size == (256, 171)
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "Accept" in response["Vary"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("size", "expected"), [(16, (16, 11)), (100, (100, 67)), (1024, (300, 200))]
)
def test_size_bounds_the_longer_side_and_never_enlarges(client, stored, size, expected):
    response = client.get(thumbnail_url(stored, f"?size={size}"))
    assert decoded(response.content).size == expected


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        ("image/jpeg", JPEG),
        ("image/jpeg, image/webp;q=0.5", JPEG),
        ("image/avif,image/webp,image/apng,image/*,*/*;q=0.8", WEBP),
        ("*/*", WEBP),
    ],
)
def test_accept_chooses_between_webp_and_jpeg(client, stored, accept, content_type):
    response = client.get(thumbnail_url(stored, "?size=64"), HTTP_ACCEPT=accept)
    assert response.status_code == 200
    assert response["Content-Type"] == content_type
    assert decoded(response.content).format == content_type.split("/")[1].upper()


@pytest.mark.django_db
def test_an_accept_without_webp_or_jpeg_is_406(client, stored):
    response = client.get(thumbnail_url(stored), HTTP_ACCEPT="image/png")
    assert response.status_code == 406
    assert "errors" in response.json()


@pytest.mark.django_db
@pytest.mark.parametrize("size", ["0", "15", "1025", "-256", "big", "1.5"])
def test_a_size_out_of_range_or_not_a_number_is_400(client, stored, size):
    response = client.get(thumbnail_url(stored, f"?size={size}"))
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["size"]


@pytest.mark.django_db
def test_an_unknown_image_is_404(client):
    response = client.get("/collections/images/00000000-0000-0000-0000-000000000000/thumbnail")
    assert response.status_code == 404
    assert "errors" in response.json()


@pytest.mark.django_db
def test_etag_and_cache_control_let_clients_revalidate_with_304(client, stored):
    response = client.get(thumbnail_url(stored, "?size=64"))
    etag = response["ETag"]
    assert etag.startswith('W/"')
    assert stored["sha256"] in etag
    assert "public" in response["Cache-Control"]
    assert "max-age=" in response["Cache-Control"]
    again = client.get(thumbnail_url(stored, "?size=64"), HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304
    assert again.content == b""
    assert again["ETag"] == etag


@pytest.mark.django_db
def test_each_size_and_format_has_its_own_etag(client, stored):
    etags = {
        client.get(thumbnail_url(stored, f"?size={size}"), HTTP_ACCEPT=accept)["ETag"]
        for size in (64, 128)
        for accept in (WEBP, JPEG)
    }
    assert len(etags) == 4


@pytest.mark.django_db
def test_a_repeated_thumbnail_comes_from_the_cache_without_reading_the_image(
    client, stored, django_assert_num_queries, django_assert_max_num_queries
):
    # Metadata, then the stored bytes (unless this process read them lately).
    with django_assert_max_num_queries(2):
        first = client.get(thumbnail_url(stored, "?size=128"))
    with django_assert_num_queries(1):  # metadata only
        second = client.get(thumbnail_url(stored, "?size=128"))
    assert second.content == first.content


@pytest.mark.django_db
def test_a_revalidation_reads_only_the_metadata(client, stored, django_assert_num_queries):
    etag = client.get(thumbnail_url(stored))["ETag"]
    cache.clear()
    with django_assert_num_queries(1):
        assert client.get(thumbnail_url(stored), HTTP_IF_NONE_MATCH=etag).status_code == 304


@pytest.mark.django_db
def test_head_sends_the_headers_without_the_body(client, stored):
    response = client.head(thumbnail_url(stored))
    assert response.status_code == 200
    assert response.content == b""
    assert int(response["Content-Length"]) > 0


@pytest.mark.django_db
def test_a_deleted_image_has_no_thumbnail_even_when_cached(client, stored):
    assert client.get(thumbnail_url(stored)).status_code == 200
    assert client.delete(stored["href"]).status_code == 204
    assert client.get(thumbnail_url(stored)).status_code == 404
