"""Wire formats: the only place that knows ``deviceId`` and ``imageData``.

HTTP views and CoAP resources validate through these same serializers.
"""

from __future__ import annotations

import base64
import binascii
import functools
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rest_framework import serializers

from formats.b64 import decode_base64
from formats.rfc3339 import format_timestamp, parse_timestamp
from images import discovery, selectors
from images.models import Image

DEVICE_ID_MAX_LENGTH = 100


class DeviceIdField(serializers.Field):
    """1 to 100 characters, no control characters (Unicode Cc); an integer is
    taken as its decimal string."""

    default_error_messages = {
        "type": "must be a string (or an integer)",
        "length": f"must be 1 to {DEVICE_ID_MAX_LENGTH} characters long",
        "control": "must not contain control characters",
        "unicode": "must be valid Unicode (no lone surrogates)",
    }

    def to_internal_value(self, data: Any) -> str:
        if isinstance(data, bool) or not isinstance(data, str | int):
            self.fail("type")
        if isinstance(data, int) and abs(data) >= 10**DEVICE_ID_MAX_LENGTH:
            self.fail("length")  # and str() of a huge int would raise (PEP 651 limit)
        text = str(data)
        if not 1 <= len(text) <= DEVICE_ID_MAX_LENGTH:
            self.fail("length")
        categories = {unicodedata.category(ch) for ch in text}
        if "Cc" in categories:
            self.fail("control")
        if "Cs" in categories:
            self.fail("unicode")  # a lone surrogate cannot be stored or encoded
        return text

    def to_representation(self, value: str) -> str:
        return value


class TimestampField(serializers.Field):
    """RFC 3339 date-time in, UTC with ``Z`` out (see formats.rfc3339)."""

    def __init__(self, *, space_means_plus: bool = False, **kwargs: Any) -> None:
        self.space_means_plus = space_means_plus
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> datetime:
        if isinstance(data, datetime):
            # CBOR's own date-times (RFC 8949 §3.4.1-2: tag 0 text, tag 1
            # epoch), which cbor2 decodes; no offset means UTC, as for text.
            if data.tzinfo is None:
                data = data.replace(tzinfo=UTC)
            try:
                return data.astimezone(UTC)
            except OverflowError:
                raise serializers.ValidationError("a date-time year must be 1 to 9999") from None
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


# A form's image part: the first of these names that is a file part, else the
# form's only file part (API.md §16).
IMAGE_PART_NAMES = ("imageData", "image")
KEY_NAMES = ("deviceId", "timestamp")


@dataclass(frozen=True)
class FormParts:
    """What a form holds, for :class:`ImagePartField` to pick the image from."""

    files: Mapping[str, Sequence[Any]]
    text: frozenset[str]


class ImagePartField(serializers.Field):
    """The image's file part of a form, its bytes raw (never base64 text)."""

    default_error_messages = {
        "missing": "the image is missing: send it as a file part named imageData",
        "text": "must be a file part (one with a filename), the image's own bytes, "
        "not a text field",
        "repeated": "one file part named {name}, not {count}",
        "ambiguous": "file parts {names}, none named imageData or image: "
        "name the image's part imageData",
    }

    def to_internal_value(self, data: FormParts) -> Any:
        for name in IMAGE_PART_NAMES:
            if name in data.files:
                return self._one(name, data.files[name])
            if name in data.text:
                self.fail("text")
        if not data.files:
            self.fail("missing")
        if len(data.files) > 1:
            self.fail("ambiguous", names=", ".join(sorted(data.files)))
        [(name, parts)] = data.files.items()
        return self._one(name, parts)

    def _one(self, name: str, parts: Sequence[Any]) -> Any:
        if len(parts) != 1:
            self.fail("repeated", name=name, count=len(parts))
        return parts[0]


class ImageFormSerializer(serializers.Serializer):
    """A ``multipart/form-data`` upload (RFC 7578), as IP cameras and ESP32 firmware send it.

    ``deviceId`` and ``timestamp`` are text fields, each taken from the query
    instead when the form lacks it (as a raw upload's; a form field wins);
    the image is a file part (:class:`ImagePartField`). Other fields are
    ignored.
    """

    def __init__(
        self,
        *,
        text: Mapping[str, str],
        files: Mapping[str, Sequence[Any]],
        query: Mapping[str, Any],
    ) -> None:
        self.from_query = frozenset(
            name for name in KEY_NAMES if name not in text and name in query
        )
        data: dict[str, Any] = {name: query[name] for name in self.from_query}
        data.update({name: text[name] for name in KEY_NAMES if name in text})
        data["imageData"] = FormParts(files=files, text=frozenset(text))
        super().__init__(data=data)

    def get_fields(self) -> dict[str, serializers.Field]:
        # A "+" in a query arrives as a space; in a form field it is itself.
        return {
            "deviceId": DeviceIdField(source="device_id"),
            "timestamp": TimestampField(space_means_plus="timestamp" in self.from_query),
            "imageData": ImagePartField(source="data"),
        }


class ImageMetadataSerializer(serializers.ModelSerializer):
    id = serializers.CharField(read_only=True)
    deviceId = serializers.CharField(source="device_id")
    timestamp = TimestampField()
    contentType = serializers.CharField(source="content_type")
    originalSize = serializers.IntegerField(source="original_size")
    storedSize = serializers.IntegerField(source="stored_size")
    atRestSize = serializers.IntegerField(source="at_rest_size")
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
            "atRestSize",
            "sha256",
            "receivedAt",
            "optimized",
            "href",
        ]
        read_only_fields = fields


def validated(serializer_class: type[serializers.Serializer], data: Any) -> dict[str, Any]:
    """``data`` validated by ``serializer_class``; DRF's ``ValidationError`` naming each field.

    HTTP answers that error as a 400 directly; CoAP turns it into 4.00.
    """
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


@functools.cache
def _metadata_serializer() -> ImageMetadataSerializer:
    # One instance, its fields bound once: building a ModelSerializer's
    # fields from the model took 0.6 ms, twice per upload (the answer and
    # the event), a third of a JPEG upload's own CPU. to_representation()
    # keeps no state between calls (DRF's ListSerializer reuses its child
    # the same way).
    return ImageMetadataSerializer()


def image_metadata(image: Image) -> dict[str, Any]:
    """The contract's metadata map for one image."""
    return dict(_metadata_serializer().to_representation(image))


# --- Listings (API.md §4, §9) -----------------------------------------------

LIMIT_DEFAULT = 100
LIMIT_MAX = 1000

# The kind prefix inside a cursor: a device list's cursor is refused by an
# image listing and the other way round.
DEVICE_CURSOR = "d"
IMAGE_CURSOR = "t"


def cursor_encode(kind: str, position: str) -> str:
    """An opaque, URL-safe token for a listing position."""
    token = base64.urlsafe_b64encode(f"{kind}:{position}".encode())
    return token.rstrip(b"=").decode("ascii")


def cursor_decode(kind: str, token: str) -> str:
    """The position in a token from :func:`cursor_encode`; ``ValueError`` if it is not one."""
    try:
        text = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
        found, sep, position = text.decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("not a cursor from a next link") from None
    if not sep or found != kind:
        raise ValueError("not a cursor from a next link of this listing")
    return position


class DeviceCursorField(serializers.Field):
    """A device listing's cursor: the id of the last device on the previous page."""

    def to_internal_value(self, data: Any) -> str:
        try:
            return DeviceIdField().to_internal_value(cursor_decode(DEVICE_CURSOR, str(data)))
        except (ValueError, serializers.ValidationError):
            raise serializers.ValidationError("not a cursor from a next link of /devices") from None


class ImageCursorField(serializers.Field):
    """An image listing's cursor: the timestamp of the last image on the previous page."""

    def to_internal_value(self, data: Any) -> datetime:
        try:
            return parse_timestamp(cursor_decode(IMAGE_CURSOR, str(data)))
        except ValueError:
            raise serializers.ValidationError(
                "not a cursor from a next link of this device's images"
            ) from None


def _limit_field() -> serializers.IntegerField:
    return serializers.IntegerField(
        min_value=1, max_value=LIMIT_MAX, required=False, default=LIMIT_DEFAULT
    )


class DeviceListQuerySerializer(serializers.Serializer):
    """``limit`` and ``cursor`` of ``GET /devices``; other parameters are ignored."""

    limit = _limit_field()
    cursor = DeviceCursorField(required=False, source="after")


class ImageListQuerySerializer(serializers.Serializer):
    """``from`` (inclusive), ``to`` (exclusive), ``limit`` and ``cursor`` of a device's images."""

    def get_fields(self) -> dict[str, serializers.Field]:
        # Declared here because ``from`` is a Python keyword.
        return {
            "from": TimestampField(space_means_plus=True, required=False, source="start"),
            "to": TimestampField(space_means_plus=True, required=False, source="end"),
            "limit": _limit_field(),
            "cursor": ImageCursorField(required=False, source="after"),
        }

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        start, end = attrs.get("start"), attrs.get("end")
        if start is not None and end is not None and end < start:
            raise serializers.ValidationError({"to": ["must not be before from"]})
        return attrs


class DeviceSummarySerializer(serializers.Serializer):
    """One device in ``GET /devices`` (API.md §4)."""

    deviceId = serializers.CharField(source="device_id")
    imageCount = serializers.IntegerField(source="image_count")
    firstTimestamp = TimestampField(source="first_timestamp")
    lastTimestamp = TimestampField(source="last_timestamp")
    href = serializers.SerializerMethodField()

    def get_href(self, device: selectors.DeviceSummary) -> str:
        return discovery.device_images_href(device.device_id)


class DevicePageSerializer(serializers.Serializer):
    """A page of ``GET /devices`` (API.md §9)."""

    items = DeviceSummarySerializer(many=True)
    next = serializers.CharField(allow_null=True, help_text="The next page's URL, or null.")


class ImagePageSerializer(serializers.Serializer):
    """A page of ``GET /devices/{deviceId}/images`` (API.md §9)."""

    items = ImageMetadataSerializer(many=True)
    next = serializers.CharField(allow_null=True, help_text="The next page's URL, or null.")
