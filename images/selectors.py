"""Reads: each is one indexed query."""

from __future__ import annotations

import uuid
from datetime import datetime

from django.core.exceptions import ValidationError

from images.errors import ImageNotFound
from images.models import Image


def image_find(*, device_id: str, timestamp: datetime, with_data: bool = True) -> Image:
    """The image a device sent at ``timestamp`` (unique index lookup)."""
    queryset = Image.objects.all() if with_data else Image.objects.defer("data")
    try:
        return queryset.get(device_id=device_id, timestamp=timestamp)
    except Image.DoesNotExist:
        raise ImageNotFound("no image for this deviceId and timestamp") from None


def image_get(*, image_id: uuid.UUID | str, with_data: bool = True) -> Image:
    """The image with this id (primary key lookup)."""
    queryset = Image.objects.all() if with_data else Image.objects.defer("data")
    try:
        return queryset.get(id=image_id)
    except (Image.DoesNotExist, ValueError, ValidationError):
        raise ImageNotFound("no image with this id") from None
