"""``runcoap``: the CoAP endpoint alone (API.md §5, §7).

Pending migrations are applied first, as ``runserver`` does, so a fresh
database works with nothing else to run. In token mode (``IMAGES_AUTH=token``)
the image resources need OSCORE (see ``coapcontext`` and docs/coap.md).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
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
        parser.add_argument(
            "--oscore-dir",
            type=Path,
            help="the OSCORE contexts, in token mode (default: the COAP_OSCORE_DIR setting)",
        )

    def handle(
        self, *args: Any, host: str, port: int, oscore_dir: Path | None, **options: Any
    ) -> None:
        if settings.IMAGES_AUTH == "token":
            oscore_dir = oscore_dir or Path(settings.COAP_OSCORE_DIR)
        else:
            oscore_dir = None
        call_command("migrate", interactive=False, verbosity=0)
        asyncio.run(serve(host, port, oscore_dir=oscore_dir, ready=self._announce))

    def _announce(self, message: str) -> None:
        self.stdout.write(message)
        self.stdout.flush()
