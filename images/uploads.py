"""The upload flow, one for every front end (API.md §2, §5, §6, §9).

HTTP and CoAP differ only in how the body and its options arrive; what is
judged, in which order, and what is stored is here:

1. :meth:`Upload.admit`, before the body is read (HTTP: from the headers;
   CoAP: on the first block): the media type (415), the size the body
   announces (413), and for a raw image, whose key is in the query, the key
   (400), who may upload as that device (401/403) and the rates (429);
2. :meth:`Upload.store`, with the body: for a JSON or CBOR envelope, or a
   multipart form (HTTP only, API.md §16), validate it (400), then who and
   the rates, now that the body names the device; then ingest
   (:func:`images.services.image_ingest`).

A front end maps the typed errors to its wire once, at its edge.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from rest_framework.exceptions import ParseError

from formats.cbor import CBOR_MEDIA_TYPE, CBORParser
from formats.json import StrictJSONParser
from images import access, services, sources
from images.access import Principal
from images.errors import (
    ImageTooLarge,
    InvalidInput,
    UnsupportedMediaType,
)
from images.serializers import (
    ImageFormSerializer,
    ImageKeySerializer,
    ImageUploadSerializer,
    validated,
)

RAW_IMAGE_TYPES = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/bmp",
        "image/tiff",
        "application/octet-stream",
    }
)
JSON_MEDIA_TYPE = "application/json"
# RFC 7578; parsed by the HTTP front end (CoAP has no content format for it).
FORM_MEDIA_TYPE = "multipart/form-data"
ENVELOPE_PARSERS = {JSON_MEDIA_TYPE: StrictJSONParser(), CBOR_MEDIA_TYPE: CBORParser()}
ACCEPTED_TYPES = (JSON_MEDIA_TYPE, CBOR_MEDIA_TYPE, FORM_MEDIA_TYPE, *sorted(RAW_IMAGE_TYPES))

# Room for the JSON/CBOR envelope around the image (API.md §9: "plus 64 KiB"),
# or for a form's boundaries, part headers and text fields.
ENVELOPE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Form:
    """A ``multipart/form-data`` body as the front end's parser left it.

    ``text``: the text fields by name; ``files``: each file part's bytes as a
    seekable file (in memory or on disk, as the parser chose), by name.
    """

    text: Mapping[str, str]
    files: Mapping[str, Sequence[BinaryIO]]


def media_type_checked(media_type: str | None) -> str:
    """The base media type, lowercased; :class:`UnsupportedMediaType` (415) unless we take it."""
    base = (media_type or "").split(";", 1)[0].strip().lower()
    if not base:
        raise UnsupportedMediaType("a request body needs a Content-Type")
    if base not in ACCEPTED_TYPES:
        raise UnsupportedMediaType(
            f"unsupported Content-Type {base!r}; send one of {', '.join(ACCEPTED_TYPES)}"
        )
    return base


def body_limit(media_type: str) -> int:
    """The largest body that can carry an image of the operator's byte limit.

    Base64 in JSON (with MIME line breaks tolerated); hex text of CBOR that
    holds base64 text (the original clients' form) in CBOR; the image itself
    otherwise (a raw body, or a form's file part, its bytes raw). Each plus
    the envelope allowance.
    """
    max_image_bytes = services.limits_current().max_bytes
    base64_len = 4 * math.ceil(max_image_bytes / 3)
    base64_with_breaks = base64_len + 2 * math.ceil(base64_len / 76)
    if media_type == JSON_MEDIA_TYPE:
        return base64_with_breaks + ENVELOPE_BYTES
    if media_type == CBOR_MEDIA_TYPE:
        return 2 * (base64_with_breaks + ENVELOPE_BYTES)
    return max_image_bytes + ENVELOPE_BYTES


def body_size_checked(size: int, media_type: str) -> None:
    """:class:`ImageTooLarge` (413, with the limit) for a body larger than the type allows."""
    limit = body_limit(media_type)
    if size > limit:
        raise ImageTooLarge(
            f"request body of {size} bytes exceeds the limit of {limit} for {media_type}",
            field="detail",
            limit=limit,
        )


class Upload:
    """One upload as a front end received it: its media type, who sent it, its query."""

    def __init__(
        self,
        *,
        media_type: str | None,
        principal: Principal,
        query: Mapping[str, Any],
        client: str | None = None,
    ) -> None:
        self.media_type = media_type_checked(media_type)
        self.principal = principal
        self.query = query
        self.client = client
        self.raw = self.media_type in RAW_IMAGE_TYPES
        self.form = self.media_type == FORM_MEDIA_TYPE

    def admit(self, *, size: int | None) -> None:
        """Everything that can be judged before the body: see the module docstring."""
        if size is not None:
            body_size_checked(size, self.media_type)
        access.require(
            access.may_upload(self.principal),
            self.principal,
            "uploads need a device token (or, over CoAP, a device's OSCORE context)",
        )
        if self.raw:
            device_id = self.key()["device_id"]
            self.authorised(device_id)
            access.upload_rate_check(device_id=device_id, client=self.client)
        else:
            access.upload_rate_check(client=self.client)

    def key(self) -> dict[str, Any]:
        """A raw upload's ``deviceId`` and ``timestamp``, from the query (DRF's ValidationError)."""
        return validated(ImageKeySerializer, self.query)

    def authorised(self, device_id: str) -> None:
        """401 or 403 unless the principal may upload as ``device_id``."""
        access.require(
            access.may_upload(self.principal, device_id),
            self.principal,
            f"these credentials may not upload as device {device_id!r}",
        )

    def store(self, body: Any, *, admitted: bool = True) -> services.IngestResult:
        """Validate and ingest ``body``: a raw image (bytes or a file), an envelope or a form.

        An envelope may come as bytes (parsed here) or already parsed by the
        front end's parser. ``admitted=False`` when :meth:`admit` ran on an
        earlier request of the same transfer (CoAP's first block): then the
        key and whether this request may upload as it are judged again, since
        each request carries its own credentials, but nothing is counted twice.
        """
        if self.raw:
            key = self.key()
            if not admitted:
                self.authorised(key["device_id"])
            data = body if isinstance(body, bytes) else sources.as_file(body)
            return services.image_ingest(**key, data=data)
        fields = self._fields(body)
        self.authorised(fields["device_id"])
        access.upload_rate_check(device_id=fields["device_id"])
        return services.image_ingest(**fields)

    def _fields(self, body: Any) -> dict[str, Any]:
        """An envelope's or a :class:`Form`'s ``device_id``, ``timestamp`` and ``data``.

        DRF's ValidationError (400) names each field at fault.
        """
        if isinstance(body, Form):
            form = ImageFormSerializer(text=body.text, files=body.files, query=self.query)
            form.is_valid(raise_exception=True)
            return dict(form.validated_data)
        parsed = self._parse(body) if isinstance(body, bytes) else body
        return validated(ImageUploadSerializer, parsed)

    def _parse(self, body: bytes) -> Any:
        try:
            return ENVELOPE_PARSERS[self.media_type].parse(io.BytesIO(body))
        except ParseError as exc:
            raise InvalidInput(str(exc.detail)) from None
