"""Wire formats: the only place that knows ``deviceId`` and ``imageData``.

HTTP views and CoAP resources validate through these same serializers.
"""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Any

from rest_framework import serializers

from formats.b64 import decode_base64
from formats.rfc3339 import format_timestamp, parse_timestamp
from images.models import Image

DEVICE_ID_MAX_LENGTH = 100


class DeviceIdField(serializers.Field):
    """1 to 100 characters, no control characters (Unicode Cc); an integer is
    taken as its decimal string."""

    default_error_messages = {
        "type": "must be a string (or an integer)",
        "length": f"must be 1 to {DEVICE_ID_MAX_LENGTH} characters long",
        "control": "must not contain control characters",
    }

    def to_internal_value(self, data: Any) -> str:
        if isinstance(data, bool) or not isinstance(data, str | int):
            self.fail("type")
        text = str(data)
        if not 1 <= len(text) <= DEVICE_ID_MAX_LENGTH:
            self.fail("length")
        if any(unicodedata.category(ch) == "Cc" for ch in text):
            self.fail("control")
        return text

    def to_representation(self, value: str) -> str:
        return value


class TimestampField(serializers.Field):
    """RFC 3339 date-time in, UTC with ``Z`` out (see formats.rfc3339)."""

    def __init__(self, *, space_means_plus: bool = False, **kwargs: Any) -> None:
        self.space_means_plus = space_means_plus
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> datetime:
        if not isinstance(data, str):
            raise serializers.ValidationError("must be an RFC 3339 date-time string")
        try:
            return parse_timestamp(data, space_means_plus=self.space_means_plus)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None

    def to_representation(self, value: datetime) -> str:
        return format_timestamp(value)


class ImageDataField(serializers.Field):
    """Base64 text (tolerant, see formats.b64) or, in CBOR, a byte string."""

    def to_internal_value(self, data: Any) -> bytes:
        if isinstance(data, bytes | bytearray | memoryview):
            return bytes(data)
        if not isinstance(data, str):
            raise serializers.ValidationError("must be base64 text (or a CBOR byte string)")
        try:
            return decode_base64(data)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None


class ImageUploadSerializer(serializers.Serializer):
    """A JSON or CBOR upload body. Unknown keys are ignored."""

    deviceId = DeviceIdField(source="device_id")
    timestamp = TimestampField()
    imageData = ImageDataField(source="data")


class ImageKeySerializer(serializers.Serializer):
    """``deviceId`` and ``timestamp`` from a query string (or CoAP Uri-Query)."""

    deviceId = DeviceIdField(source="device_id")
    timestamp = TimestampField(space_means_plus=True)


class ImageMetadataSerializer(serializers.ModelSerializer):
    id = serializers.CharField(read_only=True)
    deviceId = serializers.CharField(source="device_id")
    timestamp = TimestampField()
    contentType = serializers.CharField(source="content_type")
    originalSize = serializers.IntegerField(source="original_size")
    storedSize = serializers.IntegerField(source="stored_size")
    receivedAt = TimestampField(source="received_at")
    href = serializers.CharField(read_only=True)

    class Meta:
        model = Image
        fields = [
            "id",
            "deviceId",
            "timestamp",
            "contentType",
            "width",
            "height",
            "originalSize",
            "storedSize",
            "sha256",
            "receivedAt",
            "href",
        ]
        read_only_fields = fields


def image_metadata(image: Image) -> dict[str, Any]:
    """The contract's metadata map for one image."""
    return dict(ImageMetadataSerializer(image).data)
