"""API.md §16 per-device policy: ``policy set|list|unset``, and what ``prune`` does with them."""

from __future__ import annotations

import hashlib
import io
import os
import signal
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from conftest import png_bytes
from images.lifecycle import expiry
from images.lifecycle.policies import GLOBAL, Policies, policies_load
from images.lifecycle.retention import retention_enabled
from images.management.commands import prune as prune_command
from images.models import DevicePolicy, Image
from ops.sizes import parse_size, size_text

pytestmark = pytest.mark.django_db

FIRST = datetime(2024, 4, 1, tzinfo=UTC)


def held(device: str, hour: int, size: int = 100, *, days_ago: float = 0) -> Image:
    """An image of ``device`` taken ``hour`` hours after FIRST, of ``size`` bytes at rest."""
    key = hashlib.sha256(f"{device}/{hour}".encode()).hexdigest()
    return Image.objects.create(
        device_id=device,
        timestamp=FIRST + timedelta(hours=hour),
        received_at=timezone.now() - timedelta(days=days_ago),
        content_type="image/png",
        width=1,
        height=1,
        original_size=size,
        stored_size=size,
        sha256=key,
        original_sha256=key,
        at_rest_size=size,
        data=b"x" * size,
    )


def run(*args: str, **options: object) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, **options)
    return out.getvalue()


def left(device: str | None = None) -> list[int]:
    """The hours (after FIRST) of the images still held, of ``device`` or of all."""
    images = Image.objects.order_by("timestamp")
    if device is not None:
        images = images.filter(device_id=device)
    return [int((image.timestamp - FIRST) / timedelta(hours=1)) for image in images]


# --- Which policy governs a device ------------------------------------------------


def test_the_exact_device_beats_any_prefix_and_the_longest_prefix_beats_shorter(settings):
    settings.IMAGES_RETENTION_DAYS = 90
    patterns = ["*", "cam-*", "cam-lobby-*", "cam-lobby-2", "cam"]
    for n, pattern in enumerate(patterns):
        DevicePolicy.objects.create(pattern=pattern, max_images=n + 1)
    policies = policies_load()
    governing = {
        device: policies.governing(device).source
        for device in (
            "cam-lobby-2",
            "cam-lobby-22",
            "cam-lobby-1",
            "cam-yard",
            "cam",
            "camera",
            "door",
        )
    }
    assert governing == {
        "cam-lobby-2": "cam-lobby-2",
        "cam-lobby-22": "cam-lobby-*",
        "cam-lobby-1": "cam-lobby-*",
        "cam-yard": "cam-*",
        "cam": "cam",
        "camera": "*",
        "door": "*",
    }


def test_without_a_policy_a_device_has_the_global_settings(settings):
    settings.IMAGES_RETENTION_DAYS = 30
    settings.IMAGES_RETENTION_MAX_PER_DEVICE = 7
    DevicePolicy.objects.create(pattern="cam-*", max_images=3)
    bounds = policies_load().governing("door-1")
    assert (bounds.source, bounds.retention_days, bounds.max_images, bounds.max_bytes) == (
        GLOBAL,
        30,
        7,
        0,
    )


def test_a_bound_left_unset_is_the_global_settings_not_a_shorter_prefixs(settings):
    settings.IMAGES_RETENTION_DAYS = 30
    settings.IMAGES_RETENTION_MAX_PER_DEVICE = 7
    DevicePolicy.objects.create(pattern="cam-*", retention_days=5, max_images=3, max_bytes=900)
    DevicePolicy.objects.create(pattern="cam-1", max_bytes=100)
    bounds = policies_load().governing("cam-1")
    assert (bounds.retention_days, bounds.max_images, bounds.max_bytes) == (30, 7, 100)


def test_a_device_whose_id_is_shorter_than_a_prefix_is_not_governed_by_it():
    policies = Policies([DevicePolicy(pattern="cam-lobby-*", max_images=1)])
    assert policies.governing("cam").source == GLOBAL


# --- The policy command ------------------------------------------------------------


def test_set_creates_then_changes_only_the_bounds_given():
    assert "policy cam-* created" in run("policy", "set", "cam-*", "--retention-days", "30")
    run("policy", "set", "cam-*", "--max-bytes", "2GiB", "--max-images", "off")
    policy = DevicePolicy.objects.get()
    assert (policy.retention_days, policy.max_images, policy.max_bytes) == (30, 0, 2 * 1024**3)
    assert "policy cam-* changed" in run("policy", "set", "cam-*", "--retention-days", "inherit")
    assert DevicePolicy.objects.get().retention_days is None


def test_list_shows_each_bound_inherit_off_and_the_devices_each_policy_governs(settings):
    settings.IMAGES_RETENTION_DAYS = 30
    settings.IMAGES_RETENTION_MAX_BYTES = 10**12
    run("policy", "set", "cam-*", "--max-bytes", "500MB")
    run("policy", "set", "cam-7", "--retention-days", "0")
    for device in ("cam-1", "cam-2", "cam-7", "door"):
        held(device, 1)
    lines = run("policy", "list").splitlines()
    assert lines[0].split() == [
        "pattern",
        "retention",
        "days",
        "max",
        "images",
        "max",
        "bytes",
        "devices",
    ]
    assert lines[1].split() == ["cam-*", "inherit", "inherit", "500", "MB", "2"]
    assert lines[2].split() == ["cam-7", "off", "inherit", "inherit", "1"]
    assert lines[3].split() == ["(global", "settings)", "30", "off", "off", "1"]
    assert lines[4] == "IMAGES_RETENTION_MAX_BYTES (the installation's): 1 TB"


def test_unset_removes_the_policy_and_refuses_one_that_does_not_exist():
    run("policy", "set", "cam-1", "--max-images", "5")
    assert "policy cam-1 removed" in run("policy", "unset", "cam-1")
    assert not DevicePolicy.objects.exists()
    with pytest.raises(CommandError, match="no policy for 'cam-1'"):
        run("policy", "unset", "cam-1")


@pytest.mark.parametrize(
    ("size", "reason"),
    [
        ("5M", "unknown unit"),
        ("-1", "not a size"),
        ("1e9", "not a size"),
        ("0.5B", "not a whole number of bytes"),
        ("1,000", "not a size"),
        ("99999999TiB", "more than"),
        ("", "not a size"),
    ],
)
def test_a_bad_size_is_refused_with_the_reason(size, reason):
    with pytest.raises(CommandError, match=reason):
        run("policy", "set", "cam-1", "--max-bytes", size)
    assert not DevicePolicy.objects.exists()


@pytest.mark.parametrize(
    ("size", "expected"),
    [("1048576", 1048576), ("500MB", 500 * 10**6), ("2GiB", 2 * 1024**3), ("1.5 kB", 1500)],
)
def test_sizes_are_bytes_or_decimal_or_binary_units(size, expected):
    run("policy", "set", "cam-1", "--max-bytes", size)
    assert DevicePolicy.objects.get().max_bytes == expected


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("", "1 to 100 characters"),
        ("c" * 101, "1 to 100 characters"),
        ("cam\n1", "control characters"),
        ("cam-*-lobby", "only at its end"),
        ("cam-**", "only at its end"),
    ],
)
def test_a_bad_pattern_is_refused_with_the_reason(pattern, reason):
    with pytest.raises(CommandError, match=reason):
        run("policy", "set", pattern, "--max-images", "1")
    assert not DevicePolicy.objects.exists()


@pytest.mark.parametrize(("option", "value"), [("--max-images", "-3"), ("--retention-days", "1.5")])
def test_a_bad_count_is_refused(option, value):
    with pytest.raises(CommandError, match="not a whole number"):
        run("policy", "set", "cam-1", option, value)


def test_retention_is_on_when_a_policy_exists_or_the_installation_is_bounded(settings):
    assert not retention_enabled()
    settings.IMAGES_RETENTION_MAX_BYTES = 10**9
    assert retention_enabled()
    settings.IMAGES_RETENTION_MAX_BYTES = 0
    DevicePolicy.objects.create(pattern="cam-1")
    assert retention_enabled()


# --- What prune does with them ----------------------------------------------------


def test_max_bytes_prunes_the_oldest_by_timestamp_until_the_device_is_under():
    # Received in another order than taken: the timestamp decides.
    for hour, size in ((3, 300), (1, 100), (4, 400), (2, 200), (5, 500)):
        held("cam-1", hour, size)
    held("cam-2", 1, 5000)
    run("policy", "set", "cam-1", "--max-bytes", "1000")
    out = run("prune")
    # 1500 held: 1, 2 and 3 (600 bytes) go, leaving 900; 1 and 2 alone would leave 1200.
    assert left("cam-1") == [4, 5]
    assert left("cam-2") == [1]
    assert "cam-1: deleted 3 images, 600 bytes" in out
    assert "deleted 3 images, 600 bytes" in out.splitlines()[-1]


def test_a_family_bound_applies_to_each_device_apart():
    for device in ("cam-1", "cam-2"):
        for hour in range(4):
            held(device, hour, 100)
    run("policy", "set", "cam-*", "--max-bytes", "250")
    run("prune")
    assert left("cam-1") == [2, 3]
    assert left("cam-2") == [2, 3]


def test_max_images_and_max_bytes_together_keep_the_stricter(settings):
    settings.IMAGES_RETENTION_MAX_PER_DEVICE = 3
    for hour, size in ((1, 100), (2, 100), (3, 100), (4, 900)):
        held("cam-1", hour, size)
        held("cam-2", hour, size)
    run("policy", "set", "cam-1", "--max-bytes", "1000")
    run("prune")
    assert left("cam-1") == [3, 4]  # the count's cut leaves 1100 bytes: one more goes
    assert left("cam-2") == [2, 3, 4]  # the global count alone


def test_the_installations_bound_prunes_the_oldest_received_across_devices(settings):
    settings.IMAGES_RETENTION_MAX_BYTES = 1000
    held("a", 1, 400, days_ago=3)
    held("b", 9, 400, days_ago=2)  # taken later, received earlier: goes before a's second
    held("a", 2, 400, days_ago=1)
    held("b", 10, 400, days_ago=0)
    out = run("prune")
    assert left() == [2, 10]
    assert "IMAGES_RETENTION_MAX_BYTES: deleted 2 images, 800 bytes" in out


def test_the_installations_bound_counts_what_the_policies_left(settings):
    settings.IMAGES_RETENTION_MAX_BYTES = 1000
    for hour in range(5):
        held("cam-1", hour, 200, days_ago=5 - hour)
    held("door", 0, 300, days_ago=10)
    run("policy", "set", "cam-1", "--max-images", "3")
    out = run("prune", dry_run=True)
    # cam-1's policy leaves 600 bytes, door 300: under 1000, nothing more goes.
    assert "cam-1: would delete 2 images, 400 bytes" in out
    assert "IMAGES_RETENTION_MAX_BYTES: would delete 0 images, 0 bytes" in out
    run("prune")
    assert left() == [0, 2, 3, 4]


def test_an_off_policy_keeps_a_device_for_ever_under_global_retention(settings):
    settings.IMAGES_RETENTION_DAYS = 30
    settings.IMAGES_RETENTION_MAX_PER_DEVICE = 1
    for device in ("cam-keep", "cam-other"):
        held(device, 1, days_ago=400)
        held(device, 2, days_ago=40)
        held(device, 3)
    run("policy", "set", "cam-keep", "--retention-days", "off", "--max-images", "0")
    out = run("prune")
    assert left("cam-keep") == [1, 2, 3]
    assert left("cam-other") == [3]
    assert "cam-keep: deleted 0 images" in out
    assert "(global settings): deleted 2 images, 200 bytes" in out


def test_a_policys_days_count_from_reception_like_the_global_rule(settings):
    settings.IMAGES_RETENTION_DAYS = 365
    for device in ("cam-1", "door"):
        held(device, 1, days_ago=10)
        held(device, 2, days_ago=1)
    run("policy", "set", "cam-*", "--retention-days", "7")
    run("prune")
    assert left("cam-1") == [2]
    assert left("door") == [1, 2]


def test_a_policy_that_governs_no_device_changes_nothing_the_global_settings_remove(settings):
    """Age alone takes a shorter path (one range of the received_at index): the same images."""
    settings.IMAGES_RETENTION_DAYS = 30
    for device in ("a", "b"):
        for hour in range(4):
            held(device, hour, days_ago=55 - 10 * hour)
    alone = run("prune", dry_run=True, verbosity=2)
    DevicePolicy.objects.create(pattern="nobody-*", max_images=1)
    with_policy = run("prune", dry_run=True, verbosity=2)
    assert with_policy.replace("nobody-*: would delete 0 images, 0 bytes\n", "") == alone
    assert "(global settings): would delete 6 images, 600 bytes" in alone


def test_a_dry_run_deletes_nothing_and_lists_exactly_what_prune_then_deletes(settings):
    settings.IMAGES_RETENTION_DAYS = 30
    settings.IMAGES_RETENTION_MAX_BYTES = 1000
    for device in ("cam-1", "cam-2", "door", "gate"):
        for hour in range(6):
            held(device, hour, 100 + hour, days_ago=60 - 10 * hour)
    run("policy", "set", "cam-*", "--max-images", "3", "--retention-days", "off")
    run("policy", "set", "door", "--max-bytes", "300")

    dry = run("prune", dry_run=True, verbosity=2)
    assert Image.objects.count() == 24
    assert _tallies(dry) == {
        "cam-*": "would delete 6 images, 606 bytes",  # hours 0-2 of each camera
        "door": "would delete 4 images, 406 bytes",  # 30 days and older; 209 bytes left
        GLOBAL: "would delete 4 images, 406 bytes",
        # 1042 bytes left: cam-1's hour 3 (received 30 days ago, first) goes.
        "IMAGES_RETENTION_MAX_BYTES": "would delete 1 image, 103 bytes",
    }
    would = [line.split()[2:4] for line in dry.splitlines() if line.startswith("  would delete ")]
    wet = run("prune", verbosity=2)
    went = [line.split()[1:3] for line in wet.splitlines() if line.startswith("  deleted ")]
    assert went == would
    assert len(went) == 15
    assert Image.objects.count() == 9
    assert dry.splitlines()[-1] == "would delete 15 images, 1,521 bytes"
    assert wet.splitlines()[-1] == "deleted 15 images, 1,521 bytes"
    # Each policy's images oldest first (by timestamp: every device's hour 0 before any hour 1).
    assert [device for _, device in would[:6]] == ["cam-1", "cam-2"] * 3


def _tallies(out: str) -> dict[str, str]:
    """Each source's line of a prune's output: {source: what it did}."""
    lines = [line for line in out.splitlines() if ": " in line and not line.startswith(" ")]
    return dict(line.split(": ", 1) for line in lines)


def test_each_image_listed_says_its_device_timestamp_and_bytes():
    held("cam-1", 1, 1234)
    held("cam-1", 2, 10)
    run("policy", "set", "cam-1", "--max-images", "1")
    out = run("prune", dry_run=True, verbosity=2)
    image = Image.objects.get(timestamp=FIRST + timedelta(hours=1))
    assert f"  would delete {image.id} cam-1 2024-04-01T01:00:00Z 1,234 bytes" in out


def test_an_image_received_after_the_prune_began_is_neither_counted_nor_removed():
    held("cam-1", 1, 100)
    late = held("cam-1", 0, 100)  # the oldest by timestamp, arriving as the prune runs
    Image.objects.filter(id=late.id).update(received_at=timezone.now() + timedelta(hours=1))
    run("policy", "set", "cam-1", "--max-bytes", "100", "--max-images", "1")
    run("prune")
    assert left("cam-1") == [0, 1]


def test_uploaded_images_are_bounded_by_their_at_rest_size(client):
    sizes = []
    for day in (1, 2, 3):
        url = f"/collections/images?deviceId=cam-1&timestamp=2024-04-0{day}T00:00:00Z"
        data = png_bytes(size=(64, 64), seed=day)
        response = client.post(url, data, content_type="image/png")
        assert response.status_code == 201
        sizes.append(response.json()["atRestSize"])
    run("policy", "set", "cam-1", "--max-bytes", str(sizes[1] + sizes[2]))
    run("prune")
    assert [image.timestamp.day for image in Image.objects.order_by("timestamp")] == [2, 3]


def test_the_oldest_pages_are_walked_past_a_page(monkeypatch):
    monkeypatch.setattr(expiry, "PAGE", 3)
    for hour in range(10):
        held("cam-1", hour, 10)
    run("policy", "set", "cam-1", "--max-bytes", "25")
    run("prune")
    assert left("cam-1") == [8, 9]


def test_the_installations_walk_pages_past_images_received_at_the_same_instant(
    settings, monkeypatch
):
    monkeypatch.setattr(expiry, "PAGE", 3)
    settings.IMAGES_RETENTION_MAX_BYTES = 25
    for hour in range(10):
        held("cam-1", hour, 10)
    Image.objects.update(received_at=timezone.now() - timedelta(days=1))
    out = run("prune", dry_run=True)
    assert "IMAGES_RETENTION_MAX_BYTES: would delete 8 images, 80 bytes" in out
    run("prune")
    assert Image.objects.count() == 2


# --- prune --watch -----------------------------------------------------------------


def test_a_watching_prune_applies_a_policy_added_while_it_waits(settings, monkeypatch):
    """``serve`` may start ``prune --watch`` with retention off: a later policy still counts."""
    settings.IMAGES_RETENTION_INTERVAL = 0
    held("cam-1", 1)
    held("cam-1", 2)
    rounds = []

    def between_rounds() -> None:
        rounds.append(Image.objects.count())
        if len(rounds) == 1:
            DevicePolicy.objects.create(pattern="cam-*", max_images=1)
        else:
            os.kill(os.getpid(), signal.SIGTERM)  # what serve sends to stop it

    monkeypatch.setattr(prune_command, "close_old_connections", between_rounds)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        out = run("prune", watch=True)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert rounds == [2, 1]
    assert "retention is off" not in out
    assert "deleted 1 image" in out


# --- Sizes -------------------------------------------------------------------------


@given(st.text(max_size=40))
def test_a_size_is_bytes_or_a_value_error_whatever_the_text(text):
    try:
        size = parse_size(text)
    except ValueError:
        return
    assert 0 <= size <= 2**63 - 1


@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_a_size_as_shown_reads_back_as_itself(size):
    assert parse_size(size_text(size)) == size
