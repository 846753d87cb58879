"""``coapcontext``: provision, list and revoke OSCORE contexts for CoAP token mode.

``coapcontext --device ID`` (or ``--reader NAME``) creates an OSCORE security
context (RFC 8613) bound to that device or reader: the server's half under
``COAP_OSCORE_DIR``, the client's in a new directory (``--out``) to install on
the device, with an aiocoap ``credentials.json``. ``--revoke`` removes every
context bound to it; ``--list`` shows them all. A running ``runcoap`` picks
the changes up with its next request.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from images.access import DEVICE, READER
from images.coap.security import (
    Binding,
    context_provision,
    context_revoke,
    contexts_list,
)
from images.serializers import DEVICE_ID_MAX_LENGTH


class Command(BaseCommand):
    help = "Provision (or revoke, or list) the OSCORE contexts CoAP clients use in token mode."

    def add_arguments(self, parser: CommandParser) -> None:
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--device", help="the deviceId the context may upload as (and read)")
        who.add_argument("--reader", help="a name for a reader (may read)")
        who.add_argument("--list", action="store_true", help="list the provisioned contexts")
        parser.add_argument(
            "--revoke", action="store_true", help="remove every context of this device or reader"
        )
        parser.add_argument(
            "--out",
            type=Path,
            help="new directory for the client's half (default: ./oscore-<device|reader>-<name>)",
        )
        parser.add_argument(
            "--uri",
            default="coap://*",
            help="the requests credentials.json applies the context to "
            "(default: coap://*; e.g. coap://images.example/*)",
        )
        parser.add_argument(
            "--oscore-dir",
            type=Path,
            help="the server's contexts (default: the COAP_OSCORE_DIR setting)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        contexts_dir = options["oscore_dir"] or Path(settings.COAP_OSCORE_DIR)
        if options["list"]:
            for sender_id, binding in contexts_list(contexts_dir):
                self.stdout.write(f"{sender_id.hex()}\t{binding.kind}\t{binding.subject}")
            return
        binding = (
            Binding(DEVICE, options["device"])
            if options["device"] is not None
            else Binding(READER, options["reader"])
        )
        if not 1 <= len(binding.subject) <= DEVICE_ID_MAX_LENGTH:
            raise CommandError(f"the name must be 1 to {DEVICE_ID_MAX_LENGTH} characters")
        if options["revoke"]:
            revoked = context_revoke(contexts_dir=contexts_dir, binding=binding)
            if not revoked:
                raise CommandError(f"no OSCORE context is bound to {binding}")
            for sender_id in revoked:
                self.stdout.write(f"revoked {sender_id.hex()}")
            return
        client_dir = options["out"] or Path(f"oscore-{binding.kind}-{_safe(binding.subject)}")
        try:
            made = context_provision(
                contexts_dir=contexts_dir,
                binding=binding,
                client_dir=client_dir,
                uri=options["uri"],
            )
        except FileExistsError:
            raise CommandError(f"{client_dir} exists already; name another with --out") from None
        self.stderr.write(
            f"OSCORE context {made.sender_id.hex()} for {binding}: the server's half is in "
            f"{made.server_dir}; the client's is {made.client_dir}/ (secret: install it on that "
            "client only, and never on two). Its aiocoap credentials:"
        )
        self.stdout.write(str(made.credentials))


def _safe(name: str) -> str:
    """``name`` fit for a directory name: letters, digits, '.', '_' and '-' kept."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "_"
