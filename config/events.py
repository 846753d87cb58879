"""``serve``'s stream listener: an ASGI application for the event streams only.

See :mod:`images.http.streams`; granian runs it (``serve --events-port``).
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()

from images.http.streams import application  # noqa: E402

__all__ = ["application"]
