"""``exportimages [--device ID] [--from T] [--to T] FILE.tar``: images as one tar file (API.md §11).

The same tarball as ``GET /devices/{deviceId}/export``; all devices without
``--device``. ``-`` writes to standard output.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from django.core.management.base import BaseCommand, CommandError, CommandParser
from rest_framework.exceptions import ValidationError

from images.errors import DomainError
from images.lifecycle import tarball
from images.models import Image
from images.serializers import ImageListQuerySerializer, validated


class Command(BaseCommand):
    help = "Write images (one device's, or all) and their metadata to a tar file."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="the tar file to write, or - for standard output")
        parser.add_argument("--device", help="only this device's images")
        parser.add_argument("--from", dest="start", help="timestamp, inclusive")
        parser.add_argument("--to", dest="end", help="timestamp, exclusive")

    def handle(self, *args: Any, **options: Any) -> None:
        bounds = {
            name: options[key] for name, key in (("from", "start"), ("to", "end")) if options[key]
        }
        try:
            query = validated(ImageListQuerySerializer, bounds)
        except ValidationError as exc:
            raise CommandError(f"bad --from/--to: {exc.detail}") from None
        start, end = query.get("start"), query.get("end")
        if options["device"] is not None:
            images = tarball.device_images_all(options["device"], start, end)
        else:
            images = tarball.all_images(start, end)
        counted = _Counted(images)
        try:
            if options["file"] == "-":
                _write(counted, sys.stdout.buffer)
            else:
                with Path(options["file"]).open("wb") as target:
                    _write(counted, target)
        except DomainError as exc:
            raise CommandError(exc.message) from None
        if options["file"] != "-":
            noun = "image" if counted.count == 1 else "images"
            self.stdout.write(f"exported {counted.count} {noun} to {options['file']}")


def _write(images: Iterator[Image], target: BinaryIO) -> None:
    for piece in tarball.tarball_stream(images):
        target.write(piece)


class _Counted:
    """The images, counted as they go by."""

    def __init__(self, images: Iterator[Image]) -> None:
        self._images = images
        self.count = 0

    def __iter__(self) -> Iterator[Image]:
        return self

    def __next__(self) -> Image:
        image = next(self._images)
        self.count += 1
        return image
