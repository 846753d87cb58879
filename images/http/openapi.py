"""OpenAPI 3 declarations (drf-spectacular) that the views' ``extend_schema`` share.

The schema is generated from the code at ``/api/schema``: the views declare
their operations with these pieces, the serializers give the field schemas
(with the extensions below for our own field types), and :func:`postprocess`
adds the two operations endpoints, which are plain Django views.
"""

from __future__ import annotations

import copy
from typing import Any

from django.conf import settings
from drf_spectacular.extensions import (
    OpenApiAuthenticationExtension,
    OpenApiSerializerFieldExtension,
)
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import build_basic_type
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse
from rest_framework import serializers

from formats.cbor import CBOR_MEDIA_TYPE
from formats.linkformat import MEDIA_TYPE as LINK_FORMAT
from images.access import rules_apply
from images.serializers import DEVICE_ID_MAX_LENGTH, ImageMetadataSerializer
from images.uploads import RAW_IMAGE_TYPES

JSON = "application/json"
# What the service stores and serves: BMP and uncompressed TIFF become PNG,
# compressed TIFF is kept as received.
STORED_IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "image/tiff")
METADATA_TYPES = (JSON, CBOR_MEDIA_TYPE)
BINARY = build_basic_type(OpenApiTypes.BINARY)
LINKS = OpenApiResponse(
    {"type": "string"}, description="RFC 6690 link format (application/link-format)"
)

STATUS_DESCRIPTIONS = {
    400: "A missing or invalid field or parameter; the field is named.",
    401: "No credentials, or a bearer token that is malformed, unknown or revoked "
    "(token mode). Carries `WWW-Authenticate: Bearer` (RFC 6750 §3).",
    403: "The credentials do not allow this (token mode).",
    404: "No such resource (or a `format` parameter naming no format).",
    406: "`Accept` admits none of the formats this resource has.",
    409: "Another image is stored under this deviceId and timestamp.",
    412: "An `If-Match`/`If-Unmodified-Since` precondition failed.",
    413: "The body (judged from `Content-Length`), the image or its pixels exceed a limit.",
    415: "The body's Content-Type is missing or not accepted.",
    416: "No range of `Range` lies within the image.",
    422: "The stored image's decoding cost exceeds today's limits (e.g. its JPEG scans): "
    "no thumbnail is made; the image itself still downloads.",
    429: "Too many uploads from this device or client address; retry after `Retry-After` seconds.",
}


class ErrorSerializer(serializers.Serializer):
    """Every error answer: ``{"errors": {"<field or 'detail'>": ["message", ...]}}``."""

    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text="Messages by the field at fault, or `detail` for the request as a whole.",
    )


def errors(*statuses: int) -> dict[tuple[int, str], OpenApiResponse]:
    """The error answers of an operation, in JSON and in CBOR (API.md §9)."""
    return {
        (status, media_type): OpenApiResponse(ErrorSerializer, STATUS_DESCRIPTIONS[status])
        for status in statuses
        for media_type in METADATA_TYPES
    }


def in_formats(
    serializer: Any, description: str, *, links: bool = True
) -> dict[str, OpenApiResponse]:
    """One answer in JSON and CBOR (the same map), and optionally in link format."""
    formats: dict[str, Any] = {
        media_type: OpenApiResponse(serializer, description) for media_type in METADATA_TYPES
    }
    if links:
        formats[LINK_FORMAT] = LINKS
    return formats


def with_status(status: int, formats: dict[str, Any]) -> dict[tuple[int, str], Any]:
    return {(status, media_type): answer for media_type, answer in formats.items()}


def header(name: str, statuses: list[int], description: str) -> OpenApiParameter:
    """A response header of the given statuses."""
    return OpenApiParameter(
        name, str, OpenApiParameter.HEADER, description=description, response=statuses
    )


def request_header(name: str, description: str) -> OpenApiParameter:
    return OpenApiParameter(name, str, OpenApiParameter.HEADER, description=description)


UPLOAD_RAW_TYPES = sorted(RAW_IMAGE_TYPES)
# A multipart upload (RFC 7578, API.md §16): written out here, since its
# fields are judged by a serializer that also reads the query.
UPLOAD_FORM = {
    "type": "object",
    "properties": {
        "deviceId": {
            "type": "string",
            "minLength": 1,
            "maxLength": DEVICE_ID_MAX_LENGTH,
            "description": "The device; else the `deviceId` query parameter.",
        },
        "timestamp": {
            "type": "string",
            "format": "date-time",
            "description": "When taken; else the `timestamp` query parameter.",
        },
        "imageData": {
            "type": "string",
            "format": "binary",
            "description": "The image's own bytes, a file part (with a filename). Also "
            "accepted: a file part named `image`, or the form's only file part.",
        },
    },
    "required": ["imageData"],
}
# A 2 x 2 PNG (red, green, blue, white): what "Try it out" in the docs sends,
# and what a schema-driven tester uploads before it follows UPLOAD_LINKS.
EXAMPLE_PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP4z8DA8J+"
    "BkYHh////DAAe9gT9Ce00PgAAAABJRU5ErkJggg=="
)
UPLOAD_EXAMPLE = OpenApiExample(
    "A PNG from device 12345",
    value={"deviceId": "12345", "timestamp": "2024-08-18T02:04:07Z", "imageData": EXAMPLE_PNG},
    request_only=True,
    media_type=JSON,
)
# OpenAPI links (3.0 §4.7.21): what an upload's answer lets a client do next.
UPLOAD_LINKS = {
    operation_id: {"operationId": operation_id, "parameters": parameters}
    for operation_id, parameters in (
        ("image_get", {"image_id": "$response.body#/id"}),
        ("image_thumbnail", {"image_id": "$response.body#/id"}),
        ("image_delete", {"image_id": "$response.body#/id"}),
        (
            "image_find",
            {"deviceId": "$response.body#/deviceId", "timestamp": "$response.body#/timestamp"},
        ),
        ("device_images", {"device_id": "$response.body#/deviceId"}),
    )
}
# The headers every stored-image answer carries (API.md §3, §9).
DOWNLOAD_HEADERS = [
    header("ETag", [200, 206, 304], "Strong: the SHA-256 of the stored bytes, quoted."),
    header("Last-Modified", [200, 206, 304], "When the stored bytes last changed."),
    header(
        "Cache-Control",
        [200, 206, 304],
        "`public` (open mode) or `private` (token mode), with `max-age`; by id also `immutable`.",
    ),
    header(
        "Content-Disposition",
        [200, 206],
        "`inline` with a safe `filename` and the real one in `filename*` (RFC 6266).",
    ),
    header("Content-Range", [206, 416], "The range sent, or `bytes */<size>` with a 416."),
]
CONDITIONAL_HEADERS = [
    request_header("If-None-Match", "An ETag from an earlier download: 304 when it matches."),
    request_header("If-Modified-Since", "An HTTP date: 304 when unchanged since."),
    request_header("Range", "`bytes=first-last` ranges (RFC 9110 §14): 206, or 416."),
    request_header("If-Range", "Serve the range only if the ETag or date still matches."),
]


# Downloads negotiate between the image and its metadata by ``Accept`` alone:
# DRF's ``?format=`` override does not reach them.
NO_FORMAT_OVERRIDE = OpenApiParameter("format", exclude=True)


def download_responses(description: str) -> dict[Any, Any]:
    """The image (or, when ``Accept`` prefers it, its metadata), ranges and revalidation."""
    image = OpenApiResponse(BINARY, description)
    return {
        **{(200, media_type): image for media_type in STORED_IMAGE_TYPES},
        **with_status(
            200,
            in_formats(
                ImageMetadataSerializer,
                "The metadata, when `Accept` names a metadata format and prefers it.",
            ),
        ),
        **{(206, media_type): image for media_type in STORED_IMAGE_TYPES},
        (206, "multipart/byteranges"): OpenApiResponse(BINARY, "Several ranges."),
        304: OpenApiResponse(description="Not modified: the client's copy is current."),
        **errors(400, 401, 403, 404, 406, 412, 416),
    }


class DeviceIdFieldSchema(OpenApiSerializerFieldExtension):
    """``deviceId``: a string of 1 to 100 characters; in uploads an integer too."""

    target_class = "images.serializers.DeviceIdField"

    def map_serializer_field(self, auto_schema: AutoSchema, direction: str) -> dict[str, Any]:
        text = {"type": "string", "minLength": 1, "maxLength": DEVICE_ID_MAX_LENGTH}
        if direction == "response":
            return text
        return {"oneOf": [text, {"type": "integer"}]}


class TimestampFieldSchema(OpenApiSerializerFieldExtension):
    """RFC 3339 date-time; answers are in UTC with ``Z``."""

    target_class = "images.serializers.TimestampField"

    def map_serializer_field(self, auto_schema: AutoSchema, direction: str) -> dict[str, Any]:
        return {"type": "string", "format": "date-time"}


class ImageDataFieldSchema(OpenApiSerializerFieldExtension):
    """Base64 text (in CBOR preferably a byte string)."""

    target_class = "images.serializers.ImageDataField"

    def map_serializer_field(self, auto_schema: AutoSchema, direction: str) -> dict[str, Any]:
        return {
            "type": "string",
            "format": "byte",
            "description": "The image, base64 (standard or URL-safe); in CBOR a byte string.",
        }


class CursorFieldSchema(OpenApiSerializerFieldExtension):
    """A listing's opaque cursor, from its ``next`` link."""

    target_class = "images.serializers.DeviceCursorField"
    match_subclasses = True

    def map_serializer_field(self, auto_schema: AutoSchema, direction: str) -> dict[str, Any]:
        return {"type": "string", "description": "Opaque; take it from the `next` link."}


class ImageCursorFieldSchema(CursorFieldSchema):
    target_class = "images.serializers.ImageCursorField"


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "images.http.auth.BearerTokenAuthentication"
    name = "bearerToken"

    def get_security_definition(self, auto_schema: AutoSchema) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A device or reader token from `manage.py issuetoken` (token mode).",
        }


class StaffSessionScheme(OpenApiAuthenticationExtension):
    target_class = "images.http.auth.StaffSessionAuthentication"
    name = "staffSession"

    def get_security_definition(self, auto_schema: AutoSchema) -> dict[str, Any]:
        return {
            "type": "apiKey",
            "in": "cookie",
            "name": settings.SESSION_COOKIE_NAME,
            "description": "A staff user's login at /accounts/login/ (token mode).",
        }


OPERATIONS_PATHS: dict[str, Any] = {
    "/healthz": {
        "get": {
            "operationId": "healthz",
            "summary": "Health: 200 when the database answers, 503 when it does not.",
            "tags": ["operations"],
            "security": [{}],
            "responses": {
                str(status): {
                    "description": description,
                    "content": {
                        JSON: {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "status": {"type": "string"},
                                    "database": {"type": "string"},
                                },
                                "required": ["status", "database"],
                            }
                        }
                    },
                }
                for status, description in ((200, "Healthy."), (503, "No database."))
            },
        }
    },
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics (text exposition format). Open in every mode.",
            "tags": ["operations"],
            "security": [{}],
            "responses": {
                "200": {
                    "description": "The figures of every worker.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    },
}


def postprocess(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    """Add the operations endpoints and the upload's links; in open mode, let every
    operation go without credentials."""
    result["paths"].update(copy.deepcopy(OPERATIONS_PATHS))
    upload = result["paths"]["/collections/images"]["post"]["responses"]
    for status in ("200", "201"):
        upload[status]["links"] = copy.deepcopy(UPLOAD_LINKS)
    if not rules_apply():
        for operations in result["paths"].values():
            for operation in operations.values():
                security = operation.get("security")
                if security is not None and {} not in security:
                    # A new list: the old one may be a view's own extend_schema(auth=...).
                    operation["security"] = [*security, {}]
    return result
