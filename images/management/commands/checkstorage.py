"""``checkstorage [--repair]``: do rows and stored bytes agree? (API.md §10)

Prints each problem, naming the image, and exits 1 when there is one:
a row whose bytes are missing or differ from its sha256, an object with no
row. ``--repair`` deletes objects with no row (left by a crash between an
object's write and its row's commit); the other problems need a person.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from images.errors import StorageUnavailable
from images.storage import objects
from images.storage.maintenance import storage_check


class Command(BaseCommand):
    help = "Compare image rows with their stored bytes; --repair removes objects with no row."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--repair", action="store_true", help="delete objects with no row")
        parser.add_argument(
            "--grace",
            type=int,
            default=600,
            help="seconds: younger objects may be uploads in flight and are not judged",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        problems = repaired = 0
        try:
            for problem in storage_check(grace=timedelta(seconds=options["grace"])):
                problems += 1
                if options["repair"] and problem.orphan:
                    objects.object_delete(problem.location)
                    repaired += 1
                    self.stdout.write(f"{problem}: deleted")
                else:
                    self.stdout.write(str(problem))
        except StorageUnavailable as exc:
            raise CommandError(exc.message) from None
        if problems == repaired:
            self.stdout.write(
                f"storage is consistent{f' ({repaired} repaired)' if repaired else ''}"
            )
            return
        raise CommandError(f"{problems - repaired} problem{'' if problems == 1 else 's'} found")
