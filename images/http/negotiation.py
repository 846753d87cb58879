"""Content negotiation: with no preference, answer in the request's format.

The contract: ``Accept`` decides; without one (``*/*`` says the same, RFC 9110
§12.5.1), a CBOR request gets a CBOR answer and anything else the first
renderer's format (JSON).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request


def request_media_type(request: Request) -> str:
    return request.content_type.split(";", 1)[0].strip().lower()


class BodyFormatNegotiation(DefaultContentNegotiation):
    def select_renderer(
        self,
        request: Request,
        renderers: Sequence[BaseRenderer],
        format_suffix: str | None = None,
    ) -> tuple[BaseRenderer, str] | Any:
        accept = request.META.get("HTTP_ACCEPT", "").strip()
        if accept in ("", "*/*"):
            body_type = request_media_type(request)
            for renderer in renderers:
                if renderer.media_type == body_type:
                    return renderer, renderer.media_type
        return super().select_renderer(request, renderers, format_suffix)
