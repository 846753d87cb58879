"""``movestorage --to URL``: move every image's bytes to the database or an object store.

Safe while the service runs and safe to interrupt: each image is copied,
checked (sha256, read back) and then switched over on its own (see
:mod:`images.storage.maintenance`). Run it again to finish an interrupted move or
to take the images uploaded meanwhile; then set ``IMAGES_STORAGE`` to the
same URL so that new images go there too.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from images.errors import ImageDamaged, StorageUnavailable
from images.storage.maintenance import image_move, images_to_move
from images.storage.objects import Bucket


class Command(BaseCommand):
    help = "Move image bytes to another storage backend: db or s3://BUCKET[/PREFIX]."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--to", required=True, help="db or s3://BUCKET[/PREFIX]")

    def handle(self, *args: Any, **options: Any) -> None:
        destination = options["to"]
        if destination != "db":
            try:
                Bucket.parse(destination)
            except ValueError as exc:
                raise CommandError(str(exc)) from None
        moved = skipped = 0
        try:
            for image in images_to_move(destination):
                if image_move(image, destination):
                    moved += 1
                else:
                    skipped += 1
                if options["verbosity"] > 1:
                    self.stdout.write(f"moved {image.id}")
        except (StorageUnavailable, ImageDamaged) as exc:
            raise CommandError(
                f"{exc.message}; {moved} moved so far, run the command again to go on"
            ) from None
        self.stdout.write(
            f"moved {moved} image{'' if moved == 1 else 's'} to {destination}"
            + (f"; {skipped} changed meanwhile, run again to move them" if skipped else "")
        )
