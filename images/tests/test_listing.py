"""API.md §4, §9 "Listings": GET /devices and GET /devices/{deviceId}/images."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import cbor2
import pytest

from conftest import METADATA_KEYS
from formats.linkformat import parse
from formats.rfc3339 import format_timestamp
from images.models import Image
from images.serializers import cursor_encode

pytestmark = pytest.mark.django_db

T0 = datetime(2024, 8, 18, 2, 4, 7, tzinfo=UTC)


def add_images(device: str, count: int, *, start: datetime = T0, step: int = 60) -> list[Image]:
    """``count`` metadata rows for ``device``, ``step`` seconds apart (a 1-byte blob each)."""
    rows = []
    for i in range(count):
        digest = hashlib.sha256(f"{device}/{start}/{i}".encode()).hexdigest()
        rows.append(
            Image(
                id=uuid.uuid4(),
                device_id=device,
                timestamp=start + timedelta(seconds=i * step),
                content_type="image/png",
                width=20,
                height=10,
                original_size=100 + i,
                stored_size=90 + i,
                sha256=digest,
                original_sha256=digest,
                data=b"\x00",
            )
        )
    return Image.objects.bulk_create(rows)


def images_url(device: str, **params: str | int) -> str:
    query = "&".join(f"{name}={quote(str(value), safe='')}" for name, value in params.items())
    return f"/devices/{quote(device, safe='')}/images" + (f"?{query}" if query else "")


def stamps(body: dict) -> list[str]:
    return [item["timestamp"] for item in body["items"]]


def walk(client, url: str) -> list[dict]:
    """Every item, following ``next`` links to the end."""
    items = []
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.content
        body = response.json()
        items += body["items"]
        url = body["next"]
    return items


# --- /devices -------------------------------------------------------------------


def test_devices_lists_each_device_with_count_first_last_and_href(client):
    add_images("cam-b", 3)
    add_images("cam-a", 2, start=T0 + timedelta(days=1))
    response = client.get("/devices")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "items": [
            {
                "deviceId": "cam-a",
                "imageCount": 2,
                "firstTimestamp": "2024-08-19T02:04:07Z",
                "lastTimestamp": "2024-08-19T02:05:07Z",
                "href": "/devices/cam-a/images",
            },
            {
                "deviceId": "cam-b",
                "imageCount": 3,
                "firstTimestamp": "2024-08-18T02:04:07Z",
                "lastTimestamp": "2024-08-18T02:06:07Z",
                "href": "/devices/cam-b/images",
            },
        ],
        "next": None,
    }
    assert "Link" not in response


def test_devices_is_an_empty_page_before_any_upload(client):
    response = client.get("/devices")
    assert response.status_code == 200
    assert response.json() == {"items": [], "next": None}


def test_devices_are_aggregated_by_the_database_in_one_query(client, django_assert_num_queries):
    for n in range(5):
        add_images(f"dev-{n}", 20)
    with django_assert_num_queries(1):
        response = client.get("/devices?limit=3")
    assert [item["imageCount"] for item in response.json()["items"]] == [20, 20, 20]


def test_devices_page_by_cursor_with_a_next_link_in_body_and_header(client):
    for n in range(5):
        add_images(f"dev-{n}", 1)
    response = client.get("/devices?limit=2")
    body = response.json()
    assert [item["deviceId"] for item in body["items"]] == ["dev-0", "dev-1"]
    assert body["next"].startswith("/devices?")
    assert response["Link"] == f'<{body["next"]}>; rel="next"'
    assert [item["deviceId"] for item in walk(client, "/devices?limit=2")] == [
        f"dev-{n}" for n in range(5)
    ]


def test_devices_in_link_format_link_to_each_listing_titled_with_the_id(client):
    add_images("cam 1", 1)
    add_images("cam/2", 1)
    response = client.get("/devices", HTTP_ACCEPT="application/link-format")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/link-format"
    assert response.content.decode() == (
        '</devices/cam%201/images>;title="cam 1",</devices/cam%2F2/images>;title="cam/2"'
    )


def test_devices_in_cbor_is_the_same_map(client):
    add_images("cam-1", 2)
    response = client.get("/devices", HTTP_ACCEPT="application/cbor")
    assert response["Content-Type"] == "application/cbor"
    assert cbor2.loads(response.content) == client.get("/devices").json()


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("cursor=%%%", "cursor"),
        ("cursor=" + cursor_encode("t", "2024-08-18T02:04:07Z"), "cursor"),
    ],
)
def test_bad_devices_parameters_are_400_naming_the_parameter(client, query, field):
    response = client.get(f"/devices?{query}")
    assert response.status_code == 400
    assert list(response.json()["errors"]) == [field]


# --- /devices/{deviceId}/images: order, paging, bounds -------------------------------


def test_a_devices_images_are_listed_oldest_first_as_metadata(client):
    add_images("cam", 3, start=T0 + timedelta(hours=1), step=-600)
    add_images("other", 2)
    response = client.get(images_url("cam"))
    assert response.status_code == 200
    body = response.json()
    assert stamps(body) == ["2024-08-18T02:44:07Z", "2024-08-18T02:54:07Z", "2024-08-18T03:04:07Z"]
    assert body["next"] is None
    first = body["items"][0]
    assert set(first) == METADATA_KEYS
    assert first["deviceId"] == "cam"
    assert first["href"] == f"/collections/images/{first['id']}"


def test_a_page_is_one_query_whatever_its_size(client, django_assert_num_queries):
    add_images("cam", 300)
    with django_assert_num_queries(1):
        response = client.get(images_url("cam", limit=250))
    assert len(response.json()["items"]) == 250


def test_limit_defaults_to_100_and_the_next_link_continues(client):
    add_images("cam", 150)
    first = client.get(images_url("cam")).json()
    assert len(first["items"]) == 100
    second = client.get(first["next"]).json()
    assert len(second["items"]) == 50
    assert second["next"] is None
    assert stamps(first) + stamps(second) == [
        format_timestamp(T0 + timedelta(minutes=i)) for i in range(150)
    ]


@pytest.mark.parametrize("limit", [1, 1000])
def test_limit_at_either_bound_is_honoured(client, limit):
    add_images("cam", 1001)
    body = client.get(images_url("cam", limit=limit)).json()
    assert len(body["items"]) == limit
    assert body["next"] is not None


def test_the_next_link_is_in_a_link_header_and_the_last_page_has_none(client):
    add_images("cam", 3)
    response = client.get(images_url("cam", limit=2))
    next_url = response.json()["next"]
    assert next_url.startswith("/devices/cam/images?")
    assert response["Link"] == f'<{next_url}>; rel="next"'
    last = client.get(next_url)
    assert last.json()["next"] is None
    assert "Link" not in last


def test_a_page_ending_exactly_at_the_last_image_has_no_next(client):
    add_images("cam", 4)
    assert client.get(images_url("cam", limit=4)).json()["next"] is None


def test_pages_stay_stable_while_images_arrive_between_them(client):
    add_images("cam", 6, step=60)
    first = client.get(images_url("cam", limit=3)).json()
    assert stamps(first) == [format_timestamp(T0 + timedelta(minutes=i)) for i in range(3)]
    # A device catches up on an old image, another arrives in the middle of
    # the next page, and a new one after everything.
    add_images("cam", 1, start=T0 - timedelta(minutes=5))
    add_images("cam", 1, start=T0 + timedelta(minutes=1, seconds=30))
    add_images("cam", 1, start=T0 + timedelta(minutes=3, seconds=30))
    add_images("cam", 1, start=T0 + timedelta(hours=1))
    rest = walk(client, first["next"])
    assert [item["timestamp"] for item in rest] == [
        format_timestamp(T0 + timedelta(minutes=3)),
        format_timestamp(T0 + timedelta(minutes=3, seconds=30)),
        format_timestamp(T0 + timedelta(minutes=4)),
        format_timestamp(T0 + timedelta(minutes=5)),
        format_timestamp(T0 + timedelta(hours=1)),
    ]


def test_microsecond_timestamps_page_without_loss_or_repeat(client):
    add_images("cam", 1, start=T0)
    add_images("cam", 1, start=T0 + timedelta(microseconds=1))
    add_images("cam", 1, start=T0 + timedelta(microseconds=2))
    items = walk(client, images_url("cam", limit=1))
    assert [item["timestamp"] for item in items] == [
        "2024-08-18T02:04:07Z",
        "2024-08-18T02:04:07.000001Z",
        "2024-08-18T02:04:07.000002Z",
    ]


# --- from / to -----------------------------------------------------------------------


def test_from_is_inclusive_and_to_is_exclusive(client):
    add_images("cam", 10)
    body = client.get(
        images_url(
            "cam",
            **{
                "from": format_timestamp(T0 + timedelta(minutes=2)),
                "to": format_timestamp(T0 + timedelta(minutes=5)),
            },
        )
    ).json()
    assert stamps(body) == [format_timestamp(T0 + timedelta(minutes=i)) for i in (2, 3, 4)]


def test_from_and_to_are_kept_in_the_next_link(client):
    add_images("cam", 10)
    url = images_url(
        "cam", limit=2, **{"from": "2024-08-18T02:05:07Z", "to": "2024-08-18T02:10:07Z"}
    )
    items = walk(client, url)
    assert [item["timestamp"] for item in items] == [
        format_timestamp(T0 + timedelta(minutes=i)) for i in range(1, 6)
    ]


def test_from_with_an_offset_means_that_instant_and_a_plus_sent_as_space_is_read_as_plus(client):
    add_images("cam", 10)
    # 04:06:07+02:00 is 02:06:07Z; the "+" arrives as a space (not percent-encoded).
    body = client.get("/devices/cam/images?from=2024-08-18T04:06:07+02:00&limit=2").json()
    assert stamps(body) == ["2024-08-18T02:06:07Z", "2024-08-18T02:07:07Z"]
    assert "from=2024-08-18T02%3A06%3A07Z" in body["next"]


def test_a_range_with_no_images_is_an_empty_page_not_404(client):
    add_images("cam", 3)
    response = client.get(images_url("cam", **{"from": "2030-01-01T00:00:00Z"}))
    assert response.status_code == 200
    assert response.json() == {"items": [], "next": None}


def test_an_unknown_device_is_404_in_the_error_format(client):
    add_images("cam", 1)
    response = client.get(images_url("nobody"))
    assert response.status_code == 404
    assert response.json() == {"errors": {"deviceId": ["no images from this device"]}}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"from": "yesterday"}, "from"),
        ({"from": "2024-08-18T02:04:07.1234567Z"}, "from"),
        ({"to": "2024-13-01T00:00:00Z"}, "to"),
        ({"to": "2024-08-18"}, "to"),
        ({"from": "2024-08-19T00:00:00Z", "to": "2024-08-18T00:00:00Z"}, "to"),
        ({"cursor": "not a cursor"}, "cursor"),
        ({"cursor": "Zm9v"}, "cursor"),
        ({"cursor": cursor_encode("t", "last tuesday")}, "cursor"),
        ({"cursor": cursor_encode("d", "cam")}, "cursor"),
    ],
)
def test_bad_query_parameters_are_400_naming_the_parameter(client, params, field):
    add_images("cam", 1)
    response = client.get(images_url("cam", **params))
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    errors = response.json()["errors"]
    assert list(errors) == [field]
    assert all(isinstance(message, str) and message for message in errors[field])


def test_an_empty_parameter_means_it_was_not_given(client):
    add_images("cam", 3)
    body = client.get("/devices/cam/images?from=&to=&limit=&cursor=").json()
    assert len(body["items"]) == 3


def test_a_bad_parameter_is_400_in_cbor_when_cbor_is_preferred(client):
    add_images("cam", 1)
    response = client.get(images_url("cam", limit=0), HTTP_ACCEPT="application/cbor")
    assert response.status_code == 400
    assert list(cbor2.loads(response.content)["errors"]) == ["limit"]


# --- Formats ---------------------------------------------------------------------


def test_images_in_cbor_are_the_same_map(client):
    add_images("cam", 3)
    response = client.get(images_url("cam", limit=2), HTTP_ACCEPT="application/cbor")
    assert response["Content-Type"] == "application/cbor"
    assert cbor2.loads(response.content) == client.get(images_url("cam", limit=2)).json()
    assert "Accept" in response["Vary"]


def test_images_in_link_format_parse_back_with_ct_sz_and_title(client):
    rows = add_images("cam", 3)
    response = client.get(images_url("cam", limit=2), HTTP_ACCEPT="application/link-format")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/link-format"
    links = parse(response.content.decode())
    assert [(link.href, dict(link.attrs)) for link in links] == [
        (
            f"/collections/images/{row.id}",
            {"ct": "23", "sz": str(row.stored_size), "title": format_timestamp(row.timestamp)},
        )
        for row in rows[:2]
    ]
    assert response.content.decode().startswith(f"</collections/images/{rows[0].id}>;ct=23;sz=90;")
    assert 'rel="next"' in response["Link"]


def test_an_accept_the_listing_cannot_meet_is_406(client):
    add_images("cam", 1)
    assert client.get(images_url("cam"), HTTP_ACCEPT="application/xml").status_code == 406


# --- Device ids with URL-special characters ---------------------------------------

SPECIAL_IDS = [
    "cam 1",
    "site/cam",
    "100%",
    "%2F",
    "Überwachung-Kamera-😀",
    "a?b#c&d=e",
    'quote"comma,semi;',
    "x/images",
    "trailing/",
    "+plus+",
]


@pytest.mark.parametrize("device", SPECIAL_IDS)
def test_special_device_ids_survive_listing_and_following_the_href(client, device):
    add_images(device, 2)
    add_images(device + "-other", 1)
    devices = client.get("/devices").json()["items"]
    summary = next(item for item in devices if item["deviceId"] == device)
    assert summary["href"] == f"/devices/{quote(device, safe='')}/images"
    response = client.get(summary["href"])
    assert response.status_code == 200
    items = response.json()["items"]
    assert [item["deviceId"] for item in items] == [device, device]


@pytest.mark.parametrize("device", SPECIAL_IDS)
def test_special_device_ids_round_trip_through_link_format(client, device):
    add_images(device, 1)
    links = parse(client.get("/devices", HTTP_ACCEPT="application/link-format").content.decode())
    assert [(link.href, dict(link.attrs)) for link in links] == [
        (f"/devices/{quote(device, safe='')}/images", {"title": device})
    ]
    listed = client.get(links[0].href, HTTP_ACCEPT="application/link-format")
    assert listed.status_code == 200
    assert len(parse(listed.content.decode())) == 1


def test_a_slash_in_the_id_sent_unencoded_reaches_the_same_device(client):
    add_images("site/cam", 1)
    assert client.get("/devices/site/cam/images").json()["items"][0]["deviceId"] == "site/cam"


def test_an_upload_through_the_api_shows_up_in_both_listings(client, png):
    device = "cam/ü 1"
    response = client.post(
        f"/collections/images?deviceId={quote(device, safe='')}&timestamp=2024-08-18T02%3A04%3A07Z",
        png,
        content_type="image/png",
    )
    assert response.status_code == 201
    devices = client.get("/devices").json()["items"]
    assert [(item["deviceId"], item["imageCount"]) for item in devices] == [(device, 1)]
    listed = client.get(devices[0]["href"]).json()["items"]
    assert listed == [response.json()]


# --- Discovery ---------------------------------------------------------------------


def test_discovery_advertises_the_listing_after_the_original_link(client):
    body = client.get("/.well-known/core").content.decode()
    links = parse(body)
    assert body.startswith('</collections/images>;rt="simple.act";if="core.b",')
    assert [(link.href, dict(link.attrs)) for link in links[1:]] == [
        ("/devices", {"if": "core.ll"})
    ]
    assert client.get("/.well-known/core?if=core.ll").content == b'</devices>;if="core.ll"'
