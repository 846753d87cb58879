"""``revoketoken TOKEN_OR_ID``: revoke a token at once."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from images.tokens import token_revoke


class Command(BaseCommand):
    help = "Revoke an access token, given the token itself or the id issuetoken printed."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("token", help="the token, or its numeric id")

    def handle(self, *args: Any, **options: Any) -> None:
        if not token_revoke(raw_or_id=options["token"]):
            raise CommandError("no live token matches")
        self.stdout.write("revoked")
