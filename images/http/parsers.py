"""Body parsing for uploads: the raw-image parser and the size gate."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import IO, Any

from rest_framework.parsers import BaseParser

from formats.body import spool_body
from images.errors import ImageTooLarge, UnsupportedMediaType

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

# Room for the JSON/CBOR envelope around the image (API.md §9: "plus 64 KiB").
ENVELOPE_BYTES = 64 * 1024


class RawImageParser(BaseParser):
    """The image bytes themselves; ``deviceId`` and ``timestamp`` come in the query.

    Registered for every media type (DRF picks it last) so that it can answer
    415 with the list of what is accepted, or for a missing Content-Type.
    """

    media_type = "*/*"

    def parse(
        self,
        stream: Any,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> IO[bytes]:
        base = (media_type or "").split(";", 1)[0].strip().lower()
        if not base:
            raise UnsupportedMediaType("a request body needs a Content-Type", field="detail")
        if base not in RAW_IMAGE_TYPES:
            accepted = ", ".join(["application/json", "application/cbor", *sorted(RAW_IMAGE_TYPES)])
            raise UnsupportedMediaType(
                f"unsupported Content-Type {base!r}; send one of {accepted}", field="detail"
            )
        return spool_body(stream, parser_context)


def body_limit(media_type: str, max_image_bytes: int) -> int:
    """The largest body that can carry an image of ``max_image_bytes``.

    Base64 in JSON (with MIME line breaks tolerated); hex text of CBOR that
    holds base64 text (the original clients' form) in CBOR; the image itself
    otherwise. Each plus the envelope allowance.
    """
    base64_len = 4 * math.ceil(max_image_bytes / 3)
    base64_with_breaks = base64_len + 2 * math.ceil(base64_len / 76)
    if media_type == "application/json":
        return base64_with_breaks + ENVELOPE_BYTES
    if media_type == "application/cbor":
        return 2 * (base64_with_breaks + ENVELOPE_BYTES)
    return max_image_bytes + ENVELOPE_BYTES


def check_content_length(meta: Mapping[str, Any], media_type: str, max_image_bytes: int) -> None:
    """413 from ``Content-Length`` alone, before a byte of the body is read."""
    try:
        length = int(meta.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return
    limit = body_limit(media_type, max_image_bytes)
    if length > limit:
        raise ImageTooLarge(
            f"request body of {length} bytes exceeds the limit of {limit} for {media_type}",
            field="detail",
            limit=limit,
        )
