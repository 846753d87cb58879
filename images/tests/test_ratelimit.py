"""Upload rate limits: the sliding-window counter (ops.ratelimit) and HTTP's 429s."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from django.core.cache import cache
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache

from conftest import ROOT, png_bytes
from images.models import Token
from images.tokens import token_issue
from ops.ratelimit import Rate, parse_rate, rate_hit

TS = "2024-08-18T02:04:07Z"


@pytest.fixture
def store() -> LocMemCache:
    return LocMemCache(f"ratelimit-{uuid.uuid4().hex}", {})


def hits(store, rate: Rate, times: list[float], identity: str = "cam-1") -> list[int | None]:
    return [rate_hit(store, scope="t", identity=identity, rate=rate, now=now) for now in times]


# --- Rates -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rate"),
    [("120/60", Rate(120, 60)), (" 5/1 ", Rate(5, 1)), ("off", None), ("", None), ("0", None)],
)
def test_a_rate_is_hits_per_seconds_or_off(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["120", "120/", "/60", "0/60", "5/0", "-1/60", "many/60"])
def test_a_malformed_rate_is_refused(text):
    with pytest.raises(ValueError, match="HITS/SECONDS"):
        parse_rate(text)


def test_a_malformed_rate_setting_stops_the_service_at_start_up():
    done = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**os.environ, "IMAGES_RATE_DEVICE": "lots"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert "IMAGES_RATE_DEVICE" in done.stderr


@pytest.mark.parametrize(
    ("auth", "device", "client"), [("token", "120/60", "600/60"), ("open", "off", "off")]
)
def test_limits_are_on_by_default_in_token_mode_only(auth, device, client):
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import config.settings as s; print(s.IMAGES_RATE_DEVICE, s.IMAGES_RATE_CLIENT)",
        ],
        cwd=ROOT,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("IMAGES_RATE")},
            "IMAGES_AUTH": auth,
        },
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.split() == [device, client]


# --- The counter -------------------------------------------------------------------


def test_the_limit_lets_exactly_that_many_through(store):
    results = hits(store, Rate(3, 60), [1000.0, 1001.0, 1002.0, 1003.0])
    assert results[:3] == [None, None, None]
    assert results[3] is not None


def test_identities_are_counted_apart(store):
    rate = Rate(1, 60)
    assert hits(store, rate, [1000.0], "cam-1") == [None]
    assert hits(store, rate, [1000.0], "cam-2") == [None]
    assert hits(store, rate, [1001.0], "cam-1")[0] is not None


def test_a_burst_across_a_window_boundary_is_still_one_burst(store):
    # Windows of 60 s start at multiples of 60: 1019..1021 straddle 1020.
    rate = Rate(4, 60)
    assert hits(store, rate, [1019.0, 1019.5, 1020.0, 1020.5]) == [None] * 4
    assert hits(store, rate, [1021.0])[0] is not None


def test_the_wait_is_when_the_next_hit_gets_through(store):
    rate = Rate(2, 60)
    assert hits(store, rate, [1200.0, 1230.0]) == [None, None]
    wait = hits(store, rate, [1231.0])[0]
    assert wait is not None
    assert 1 <= wait <= 120
    assert hits(store, rate, [1231.0 + wait - 2])[0] is not None
    assert hits(store, rate, [1231.0 + wait])[0] is None


def test_refused_hits_are_not_counted(store):
    rate = Rate(1, 10)
    assert hits(store, rate, [100.0]) == [None]
    assert all(wait is not None for wait in hits(store, rate, [101.0 + i / 10 for i in range(50)]))
    # Two windows later the one counted hit has slid out, however much was refused.
    assert hits(store, rate, [120.0]) == [None]


def test_the_wait_is_rounded_up_to_whole_seconds(store):
    rate = Rate(2, 10)
    assert hits(store, rate, [5.0, 9.0]) == [None, None]
    # At 14.99 the previous window still weighs 2 * 0.501: one hundredth of a second to go.
    assert hits(store, rate, [14.99]) == [1]
    assert hits(store, rate, [15.0]) == [None]


@pytest.fixture
def redis_store() -> Iterator[RedisCache]:
    location = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379"
    try:
        import redis
    except ImportError:
        pytest.skip("the redis package is not installed (pip install -r requirements.txt)")
    try:
        redis.Redis.from_url(location, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis answers at {location}: {exc}")
    store = RedisCache(location, {"KEY_PREFIX": f"test-ratelimit-{uuid.uuid4().hex}"})
    yield store
    # Only our keys: RedisCache.clear() would empty the whole database.
    client = store._cache.get_client()
    for key in client.scan_iter(f"{store.key_prefix}:*"):
        client.delete(key)


def test_the_counter_works_on_redis_shared_by_every_worker(redis_store):
    rate = Rate(3, 60)
    assert hits(redis_store, rate, [1000.0, 1000.1, 1000.2]) == [None, None, None]
    assert hits(redis_store, rate, [1000.3])[0] is not None
    # Another client of the same Redis (another worker) sees the same count.
    location = redis_store._servers[0]
    other = RedisCache(location, {"KEY_PREFIX": redis_store.key_prefix})
    assert hits(other, rate, [1000.4])[0] is not None
    assert hits(other, rate, [1000.4], "cam-2") == [None]


# --- Over HTTP ---------------------------------------------------------------------


@pytest.fixture
def fresh_cache():
    cache.clear()
    yield
    cache.clear()


def upload(client, device: str, *, headers: dict[str, str] | None = None, **extra: str):
    body = {
        "deviceId": device,
        "timestamp": TS,
        "imageData": base64.b64encode(png_bytes()).decode(),
    }
    return client.post(
        "/collections/images",
        json.dumps(body),
        content_type="application/json",
        **(headers or {}),
        **extra,
    )


def device_token(device: str) -> dict[str, str]:
    _, raw = token_issue(kind=Token.Kind.DEVICE, subject=device)
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


@pytest.mark.django_db
@pytest.mark.usefixtures("fresh_cache")
def test_200_uploads_from_one_device_in_a_minute_trip_the_default_limit(client, settings):
    settings.IMAGES_AUTH = "token"
    settings.IMAGES_RATE_DEVICE = "120/60"
    settings.IMAGES_RATE_CLIENT = "600/60"
    headers = device_token("cam-1")
    statuses = [upload(client, "cam-1", headers=headers).status_code for _ in range(200)]
    assert statuses[0] == 201
    assert statuses[1:120] == [200] * 119
    assert statuses[120:] == [429] * 80
    refused = upload(client, "cam-1", headers=headers)
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 120
    assert "too many uploads from device 'cam-1'" in refused.json()["errors"]["detail"][0]
    # Another device is counted apart.
    assert upload(client, "cam-2", headers=device_token("cam-2")).status_code == 201


@pytest.mark.django_db
@pytest.mark.usefixtures("fresh_cache")
def test_a_429_is_cbor_for_a_cbor_client(client, settings):
    settings.IMAGES_RATE_DEVICE = "1/60"
    assert upload(client, "cam-1").status_code == 201
    refused = upload(client, "cam-1", HTTP_ACCEPT="application/cbor")
    assert refused.status_code == 429
    assert refused["Content-Type"] == "application/cbor"
    assert int(refused["Retry-After"]) >= 1


@pytest.mark.django_db
@pytest.mark.usefixtures("fresh_cache")
def test_one_client_address_is_limited_across_devices(client, settings):
    settings.IMAGES_RATE_CLIENT = "3/60"
    statuses = [upload(client, f"cam-{i}").status_code for i in range(4)]
    assert statuses == [201, 201, 201, 429]
    assert upload(client, "cam-9", REMOTE_ADDR="192.0.2.7").status_code == 201


@pytest.mark.django_db
@pytest.mark.usefixtures("fresh_cache")
def test_a_forged_forwarded_for_does_not_escape_the_client_limit(client, settings):
    settings.IMAGES_RATE_CLIENT = "1/60"
    assert upload(client, "cam-1").status_code == 201
    forged = upload(client, "cam-2", HTTP_X_FORWARDED_FOR="198.51.100.1")
    assert forged.status_code == 429


@pytest.mark.django_db
@pytest.mark.usefixtures("fresh_cache")
def test_behind_a_trusted_proxy_the_forwarded_address_is_the_client(client, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    settings.IMAGES_RATE_CLIENT = "1/60"
    assert upload(client, "cam-1", HTTP_X_FORWARDED_FOR="198.51.100.1").status_code == 201
    assert upload(client, "cam-2", HTTP_X_FORWARDED_FOR="198.51.100.1").status_code == 429
    assert upload(client, "cam-3", HTTP_X_FORWARDED_FOR="198.51.100.2").status_code == 201


@pytest.mark.django_db
@pytest.mark.usefixtures("fresh_cache")
def test_downloads_are_not_rate_limited(client, settings):
    settings.IMAGES_RATE_CLIENT = "1/60"
    assert upload(client, "cam-1").status_code == 201
    url = f"/collections/images?deviceId=cam-1&timestamp={quote(TS)}"
    assert [client.get(url).status_code for _ in range(5)] == [200] * 5


@pytest.mark.django_db
@pytest.mark.usefixtures("fresh_cache")
def test_open_mode_has_no_limit_unless_the_operator_sets_one(client):
    assert [upload(client, "cam-1").status_code for _ in range(150)].count(429) == 0


@pytest.mark.django_db
@pytest.mark.usefixtures("fresh_cache")
def test_the_http_limit_holds_on_a_redis_cache(client, settings, redis_store):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_store._servers[0],
            "KEY_PREFIX": redis_store.key_prefix,
        }
    }
    settings.IMAGES_RATE_DEVICE = "2/60"
    assert [upload(client, "cam-1").status_code for _ in range(3)] == [201, 200, 429]
    counters = redis_store._cache.get_client().keys(f"{redis_store.key_prefix}:*ratelimit:*")
    assert counters, "the counts are in Redis"
