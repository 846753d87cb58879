"""The bound on what an optimizer tries (API.md §15): decoded bytes, read from the header.

A background pass costs about 93 ms of CPU per MB of pixels decoded (a
100 MP RGBA 16-bit PNG, 800 MB: 25 s and 2.3 GiB), so ``stored_form`` keeps
an image over ``max_decoded`` as received without decoding it again.
"""

from __future__ import annotations

import pytest

from images.compression import CHECK, FULL, QUICK, probe, stored_form
from images.compression.probing import decoded_bytes
from images.errors import InvalidImage
from images.tests.conftest_compression import animated_gif, encode, pattern, png16

RGBA16 = png16(4, 3, 6, bytes(4 * 3 * 8))


@pytest.mark.parametrize(
    ("data", "per_pixel", "frames"),
    [
        (RGBA16, 8, 1),  # 16-bit RGBA: 8 bytes a pixel, as oxipng holds its rows
        (png16(4, 3, 0, bytes(4 * 3 * 2)), 2, 1),  # 16-bit grey
        (encode(pattern("RGB"), "PNG"), 3, 1),
        (encode(pattern("P"), "PNG"), 1, 1),
        (encode(pattern("1"), "PNG"), 1, 1),  # 1 bit, decoded to a byte
        (encode(pattern("L"), "JPEG"), 1, 1),
        (encode(pattern("RGB"), "JPEG"), 3, 1),
        (encode(pattern("CMYK"), "JPEG"), 4, 1),
        (animated_gif(3, (20, 10)), 4, 3),
    ],
)
def test_decoded_bytes_are_pixels_times_bytes_per_pixel_times_frames(data, per_pixel, frames):
    info = probe(data)
    assert decoded_bytes(data, info) == info.width * info.height * per_pixel * frames


def test_over_the_bound_an_image_is_kept_as_received_untried():
    data = encode(pattern("RGB", (200, 100)), "PNG")
    decoded = 200 * 100 * 3
    for effort in (QUICK, FULL):
        form = stored_form(data, effort=effort, checked=True, max_decoded=decoded - 1)
        assert form.served.data is data
        assert form.served.method == "original"
        assert form.kept.startswith("kept as received: 200x100 pixels, 1 frame(s)")
        tried = stored_form(data, effort=effort, checked=True, max_decoded=decoded)
        assert (tried.served.method, tried.kept) == ("oxipng", "")
    unbounded = stored_form(data, effort=FULL, checked=True)
    assert (unbounded.served.method, unbounded.kept) == ("oxipng", "")


def test_a_check_is_not_bounded_and_an_unchecked_image_is_still_checked():
    data = encode(pattern("RGB", (200, 100)), "PNG")
    assert stored_form(data, effort=CHECK, max_decoded=1).kept == ""
    idat = data.index(b"IDAT")
    damaged = data[: idat + 40] + bytes(20) + data[idat + 60 :]
    with pytest.raises(InvalidImage):
        stored_form(damaged, effort=FULL, max_decoded=1)  # not checked before: checked here


def test_a_compactable_jpeg_goes_to_compaction_whatever_the_bound():
    data = encode(pattern("RGB", (64, 48)), "JPEG")
    form = stored_form(data, effort=FULL, compact=True, checked=True, max_decoded=1)
    assert (form.compact_later, form.kept) == (True, "")


@pytest.mark.django_db
def test_inline_the_full_pass_before_the_answer_is_bounded_too(client, settings):
    import hashlib

    settings.IMAGES_OPTIMIZE = "inline"
    settings.IMAGES_OPTIMIZE_MAX_PIXEL_BYTES = 1_000
    data = encode(pattern("RGB", (64, 64)), "PNG")  # 12,288 bytes decoded: over the bound
    response = client.post(
        "/collections/images?deviceId=bound&timestamp=2024-01-01T00:00:00Z",
        data,
        content_type="image/png",
    )
    assert response.status_code == 201
    assert response.json()["sha256"] == hashlib.sha256(data).hexdigest()  # kept as received
    settings.IMAGES_OPTIMIZE_MAX_PIXEL_BYTES = 48_000_000
    again = client.post(
        "/collections/images?deviceId=bound&timestamp=2024-01-01T00:00:01Z",
        data,
        content_type="image/png",
    )
    assert again.json()["sha256"] != hashlib.sha256(data).hexdigest()  # optimized
