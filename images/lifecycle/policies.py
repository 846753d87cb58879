"""Per-device retention (API.md §16): which policy governs a device, and its bounds.

A policy (:class:`images.models.DevicePolicy`) names one device, or a family
of devices by a prefix ending in ``*`` (``*`` alone: every device). The most
specific governs a device: its own id, else the longest prefix it starts
with, else the global settings. A bound the governing policy leaves unset
(None) is the global setting's, never a shorter prefix's: what governs a
device is always one policy, read against the settings, so ``policy list``
says all there is to know. 0 is no bound at all, whatever the settings say.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from images.models import DevicePolicy, Image

# The source of the bounds of a device no policy names.
GLOBAL = "(global settings)"
PATTERN_MAX_LENGTH = 100  # a device id's (API.md §9)
FIELDS = ("retention_days", "max_images", "max_bytes")
# The largest value each field's column holds.
LARGEST = {"retention_days": 2**31 - 1, "max_images": 2**31 - 1, "max_bytes": 2**63 - 1}


@dataclass(frozen=True)
class Bounds:
    """What one device may keep (0: no bound), and the pattern that says so (or GLOBAL)."""

    source: str
    retention_days: int
    max_images: int
    max_bytes: int


class Policies:
    """Every policy, read against the global settings, ready to govern devices."""

    def __init__(self, policies: Iterable[DevicePolicy]) -> None:
        self.default = Bounds(
            GLOBAL, settings.IMAGES_RETENTION_DAYS, settings.IMAGES_RETENTION_MAX_PER_DEVICE, 0
        )
        self._exact: dict[str, Bounds] = {}
        self._prefixes: dict[str, Bounds] = {}
        for policy in policies:
            bounds = Bounds(policy.pattern, *(self._field(policy, name) for name in FIELDS))
            if policy.pattern.endswith("*"):
                self._prefixes[policy.pattern[:-1]] = bounds
            else:
                self._exact[policy.pattern] = bounds
        # Longest first: a device is looked up once per prefix length, not per prefix.
        self._lengths = sorted({len(prefix) for prefix in self._prefixes}, reverse=True)

    def _field(self, policy: DevicePolicy, name: str) -> int:
        value = getattr(policy, name)
        return getattr(self.default, name) if value is None else value

    def governing(self, device_id: str) -> Bounds:
        """The bounds of ``device_id``: its own policy's, the longest prefix's, or the settings'."""
        if device_id in self._exact:
            return self._exact[device_id]
        for length in self._lengths:
            bounds = self._prefixes.get(device_id[:length]) if length <= len(device_id) else None
            if bounds is not None:
                return bounds
        return self.default

    def sources(self) -> list[str]:
        """Every pattern, in order, then GLOBAL: the order of a prune's report."""
        patterns = [*self._exact, *(prefix + "*" for prefix in self._prefixes)]
        return [*sorted(patterns), GLOBAL]

    def __len__(self) -> int:
        return len(self._exact) + len(self._prefixes)


def policies_load() -> Policies:
    return Policies(DevicePolicy.objects.all())


def devices_governed(policies: Policies) -> Counter[str]:
    """How many devices (of those holding images) each source governs."""
    devices = Image.objects.order_by().values_list("device_id", flat=True).distinct()
    return Counter(policies.governing(device).source for device in devices.iterator())


def pattern_check(pattern: str) -> str:
    """``pattern`` if it names a device or a family of devices; ValueError saying why not."""
    if not 1 <= len(pattern) <= PATTERN_MAX_LENGTH:
        raise ValueError(f"must be 1 to {PATTERN_MAX_LENGTH} characters long")
    categories = {unicodedata.category(ch) for ch in pattern}
    if "Cc" in categories:
        raise ValueError("must not contain control characters")
    if "Cs" in categories:
        raise ValueError("must be valid Unicode (no lone surrogates)")
    if "*" in pattern[:-1]:
        raise ValueError("may hold '*' only at its end (a prefix: cam-*)")
    return pattern


def policy_set(*, pattern: str, changes: Mapping[str, int | None]) -> tuple[DevicePolicy, bool]:
    """Create or update the policy of ``pattern`` with ``changes`` (field: value, None to
    inherit); the policy, and whether it is new. ValueError for a bad pattern or value."""
    pattern_check(pattern)
    for name, value in changes.items():
        if name not in LARGEST:
            raise ValueError(f"no field {name!r}")
        if value is not None and not 0 <= value <= LARGEST[name]:
            raise ValueError(f"{name} must be 0 to {LARGEST[name]}, not {value}")
    with transaction.atomic():
        policy, created = DevicePolicy.objects.select_for_update().get_or_create(pattern=pattern)
        for name, value in changes.items():
            setattr(policy, name, value)
        policy.updated_at = timezone.now()
        policy.save()
    return policy, created


def policy_unset(*, pattern: str) -> bool:
    """Remove the policy of ``pattern``; whether there was one."""
    deleted, _ = DevicePolicy.objects.filter(pattern=pattern).delete()
    return bool(deleted)
