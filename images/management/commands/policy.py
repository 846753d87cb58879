"""``policy set|list|unset``: retention for a device or a family of devices (API.md §16).

    policy set PATTERN [--retention-days N] [--max-images N] [--max-bytes SIZE]
    policy list
    policy unset PATTERN

PATTERN is a device id, or a prefix ending in ``*`` (``cam-*``); the most
specific governs a device (images.lifecycle.policies). ``set`` creates the
policy or changes only the bounds given; each takes ``off`` (or 0: no bound,
whatever the settings say) and ``inherit`` (the global setting's again). The
next prune applies it (``prune --dry-run`` shows what it would remove).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from images.lifecycle.policies import (
    FIELDS,
    Bounds,
    devices_governed,
    policies_load,
    policy_set,
    policy_unset,
)
from images.models import DevicePolicy
from ops.sizes import UNITS_HELP, parse_size, size_text

INHERIT = "inherit"
OFF = "off"
HEADINGS = ("pattern", "retention days", "max images", "max bytes", "devices")


class Command(BaseCommand):
    help = "Set, list or unset the retention policy of a device or a family of devices (cam-*)."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="set|list|unset")
        change = actions.add_parser("set", help="create a policy, or change the bounds given")
        change.add_argument("pattern", help="a device id, or a prefix ending in * (cam-*)")
        bound = "; off or 0: no bound; inherit: the global setting's"
        change.add_argument(
            "--retention-days",
            metavar="N",
            help="delete images received more than N days ago" + bound,
        )
        change.add_argument(
            "--max-images", metavar="N", help="keep the device's newest N by timestamp" + bound
        )
        change.add_argument(
            "--max-bytes",
            metavar="SIZE",
            help="keep the Σ of the device's bytes at rest (atRestSize) under SIZE, the oldest "
            f"by timestamp going first; SIZE in {UNITS_HELP}; off or 0: no bound; inherit: "
            "none either (IMAGES_RETENTION_MAX_BYTES bounds the installation, not a device)",
        )
        actions.add_parser("list", help="every policy, and the global settings")
        remove = actions.add_parser("unset", help="remove a policy")
        remove.add_argument("pattern")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "set":
            self._set(options)
        elif options["action"] == "unset":
            if not policy_unset(pattern=options["pattern"]):
                raise CommandError(f"no policy for {options['pattern']!r}")
            self.stdout.write(f"policy {options['pattern']} removed")
        else:
            self._list()

    def _set(self, options: dict[str, Any]) -> None:
        changes = {
            name: _bound(name, options[name]) for name in FIELDS if options.get(name) is not None
        }
        try:
            policy, created = policy_set(pattern=options["pattern"], changes=changes)
        except ValueError as exc:
            raise CommandError(f"policy {options['pattern']!r}: {exc}") from None
        self.stdout.write(f"policy {policy.pattern} {'created' if created else 'changed'}")
        self._table([_row(policy, devices_governed(policies_load()))])

    def _list(self) -> None:
        policies = policies_load()
        governed = devices_governed(policies)
        rows = [_row(policy, governed) for policy in DevicePolicy.objects.order_by("pattern")]
        self._table([*rows, _row(policies.default, governed)])
        limit = settings.IMAGES_RETENTION_MAX_BYTES
        installation = size_text(limit) if limit else OFF
        self.stdout.write(f"IMAGES_RETENTION_MAX_BYTES (the installation's): {installation}")

    def _table(self, rows: list[tuple[str, ...]]) -> None:
        widths = [max(len(row[i]) for row in [HEADINGS, *rows]) for i in range(len(HEADINGS))]
        for row in [HEADINGS, *rows]:
            cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            self.stdout.write("  ".join(cells).rstrip())


def _bound(name: str, text: str) -> int | None:
    """What ``--<name> text`` sets the field to: None to inherit, 0 for no bound."""
    value = text.strip().lower()
    if value == INHERIT:
        return None
    if value == OFF:
        return 0
    option = "--" + name.replace("_", "-")
    if name == "max_bytes":
        try:
            return parse_size(text)
        except ValueError as exc:
            raise CommandError(f"{option}: {exc}") from None
    if not value.isascii() or not value.isdigit():
        raise CommandError(f"{option}: {text!r} is not a whole number (or off, or inherit)")
    return int(value)


def _row(policy: DevicePolicy | Bounds, governed: Mapping[str, int]) -> tuple[str, ...]:
    """A table row: the pattern (or GLOBAL), each bound as said, and the devices it governs."""
    pattern = policy.pattern if isinstance(policy, DevicePolicy) else policy.source
    days, images, size = policy.retention_days, policy.max_images, policy.max_bytes
    cells = (_shown(days), _shown(images), _shown(size, size_text))
    return (pattern, *cells, str(governed.get(pattern, 0)))


def _shown(value: int | None, text: Callable[[int], str] = str) -> str:
    if value is None:
        return INHERIT
    return OFF if value == 0 else text(value)
