"""An image's file name: its download's ``Content-Disposition`` (API.md §9) and its tar member."""

from __future__ import annotations

import re
from datetime import datetime

from formats.rfc3339 import format_compact
from images.compression import extension_for
from images.models import Image

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def filename_for(image: Image) -> str:
    """``<deviceId>_<UTC timestamp, compact>.<ext>``, the device id as it is."""
    return filename_of(image.device_id, image.timestamp, image.content_type)


def filename_of(device_id: str, timestamp: datetime, content_type: str) -> str:
    """:func:`filename_for` of the image with these fields."""
    return f"{device_id}_{format_compact(timestamp)}.{extension_for(content_type)}"


def safe_filename_for(image: Image) -> str:
    """:func:`filename_for`, made safe (:func:`safe_name`)."""
    return safe_name(filename_for(image))


def safe_name(name: str) -> str:
    """``name`` with every character but letters, digits, ``.``, ``_``, ``-`` as ``_``.

    Never starts with a dot; safe as a path component anywhere.
    """
    safe = _UNSAFE.sub("_", name)
    return "_" + safe[1:] if safe.startswith(".") else safe
