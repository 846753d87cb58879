"""``webhook add|list|remove``: who is told of each image stored or deleted (API.md §16)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from images.delivery.webhooks import WebhookRefused, webhook_add, webhook_remove, webhooks


class Command(BaseCommand):
    help = "Register, list or remove webhook receivers (signed POSTs of each image event)."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        add = actions.add_parser("add", help="register a receiver")
        add.add_argument("url", help="http:// or https:// URL that takes the POSTs")
        add.add_argument(
            "--device", default="", help="only this device's events (or a prefix ending in *)"
        )
        add.add_argument(
            "--secret", default="", help="HMAC-SHA256 key for Images-Signature (default: random)"
        )
        actions.add_parser("list", help="the receivers, their backlog and their last error")
        remove = actions.add_parser("remove", help="stop delivering to a receiver")
        remove.add_argument("id", type=int, help="the receiver's id (webhook list)")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "add":
            try:
                receiver = webhook_add(
                    options["url"], device=options["device"], secret=options["secret"]
                )
            except WebhookRefused as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(f"webhook {receiver.pk}: {receiver.url}")
            if not options["secret"]:
                self.stdout.write(f"secret: {receiver.secret}")
        elif action == "list":
            self._list()
        elif not webhook_remove(options["id"]):
            raise CommandError(f"no webhook {options['id']}")
        else:
            self.stdout.write(f"webhook {options['id']} removed")

    def _list(self) -> None:
        receivers = webhooks()
        if not receivers:
            self.stdout.write("no webhooks")
        for receiver in receivers:
            state = "ok"
            if receiver.failing_since is not None:
                state = (
                    f"failing since {receiver.failing_since:%Y-%m-%d %H:%M:%S} UTC, "
                    f"{receiver.attempts} attempts, last: {receiver.last_error}"
                )
            device = receiver.device or "every device"
            self.stdout.write(
                f"{receiver.pk}\t{receiver.url}\t{device}\tafter event {receiver.cursor}\t{state}"
            )
