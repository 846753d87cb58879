"""``importimages FILE.tar``: bring an export into this installation (API.md §11).

Keeps each image's ``deviceId``, ``timestamp`` and bytes (same ``sha256``).
Running it twice stores nothing twice; an image that conflicts with one
already stored (same device and timestamp, other bytes) is reported, not
overwritten; a bad member is reported by name and the import goes on. A
file that is not a tar archive, or is cut short, ends the command with a
message and exit status 1, after everything before the damage was stored:
run it again on a whole file to finish. ``-`` reads standard input.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from images.lifecycle.tarball import TarballUnreadable, tarball_import


class Command(BaseCommand):
    help = "Import images from a tar file written by exportimages or GET .../export."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="the tar file, or - for standard input")

    def handle(self, *args: Any, **options: Any) -> None:
        verbose = options["verbosity"] > 1

        def progress(name: str, outcome: str) -> None:
            if verbose:
                self.stdout.write(f"{name}: {outcome}")

        path = options["file"]
        try:
            if path == "-":
                report = tarball_import(sys.stdin.buffer, progress=progress)
            else:
                with Path(path).open("rb") as stream:
                    report = tarball_import(stream, progress=progress)
        except FileNotFoundError:
            raise CommandError(f"no such file: {path}") from None
        except TarballUnreadable as exc:
            raise CommandError(
                f"{path}: {exc}; what came before was imported, run again on a whole file"
            ) from None
        for name, problem in report.problems:
            self.stderr.write(f"{name}: {problem}")
        self.stdout.write(
            f"imported {len(report.stored)}, already there {len(report.already)}, "
            f"problems {len(report.problems)}"
        )
        if report.problems:
            raise CommandError(f"{len(report.problems)} members could not be imported")
