"""Reading a request body for a DRF parser, refusing an incomplete one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework.exceptions import ParseError


def read_body(stream: Any, parser_context: Mapping[str, Any] | None) -> bytes:
    """The whole body; ``ParseError`` (400) when it is shorter than Content-Length.

    A client that half-closes after fewer bytes than it announced sent an
    incomplete message (RFC 9112 §8), not a shorter image or document.
    """
    body = stream.read() if stream is not None else b""
    request = (parser_context or {}).get("request")
    announced = request.META.get("CONTENT_LENGTH", "") if request is not None else ""
    if announced.isdigit() and len(body) < int(announced):
        raise ParseError(f"the request body ended after {len(body)} of its {int(announced)} bytes")
    return body
