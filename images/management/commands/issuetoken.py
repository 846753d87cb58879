"""``issuetoken --device ID`` / ``--reader NAME``: print a new token, once."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from images.models import Token
from images.serializers import DEVICE_ID_MAX_LENGTH
from images.tokens import token_issue


class Command(BaseCommand):
    help = "Issue an access token for a device (may upload as it) or a reader (may read)."

    def add_arguments(self, parser: CommandParser) -> None:
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--device", help="the deviceId this token may upload as")
        who.add_argument("--reader", help="a name for a reader (dashboard, pipeline, person)")

    def handle(self, *args: Any, **options: Any) -> None:
        kind = Token.Kind.DEVICE if options["device"] is not None else Token.Kind.READER
        subject = options["device"] if kind == Token.Kind.DEVICE else options["reader"]
        if not 1 <= len(subject) <= DEVICE_ID_MAX_LENGTH:
            raise CommandError(f"the name must be 1 to {DEVICE_ID_MAX_LENGTH} characters")
        token, raw = token_issue(kind=kind, subject=subject)
        self.stderr.write(
            f"{kind} token {token.pk} for {subject!r}; shown once, only its hash is kept:"
        )
        self.stdout.write(raw)
