"""``runcoap``: the CoAP endpoint alone (API.md §5, §7).

Pending migrations are applied first, as ``runserver`` does, so a fresh
database works with nothing else to run.
"""

from __future__ import annotations

import asyncio
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from images.coap.server import serve


class Command(BaseCommand):
    help = "Apply pending migrations, then serve the CoAP endpoint (RFC 7252 over UDP)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--host", default=settings.COAP_HOST, help="address to bind (default: all, '::')"
        )
        parser.add_argument(
            "--port", type=int, default=settings.COAP_PORT, help="UDP port (default: 5683)"
        )

    def handle(self, *args: Any, host: str, port: int, **options: Any) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        asyncio.run(serve(host, port, ready=self._announce))

    def _announce(self, message: str) -> None:
        self.stdout.write(message)
        self.stdout.flush()
