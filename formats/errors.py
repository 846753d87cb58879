"""The contract's error body for any Django response, in JSON or CBOR (API.md §2, §9).

``{"errors": {"<field or 'detail'>": ["message", ...]}}`` as JSON, or as CBOR
when the client prefers CBOR (or sent CBOR and expressed no preference).
Every front end on HTTP answers errors through this, and so do the
operations endpoints (``ops``), which must not depend on a front end.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from rest_framework.renderers import JSONRenderer

from formats.cbor import CBOR_MEDIA_TYPE, encode_cbor

Errors = dict[str, list[str]]


def _media_type(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def prefers_cbor(request: HttpRequest) -> bool:
    """CBOR when Accept prefers it; with no preference, when the body was CBOR."""
    accept = request.headers.get("Accept", "").strip()
    if accept and accept != "*/*":
        preferred = request.get_preferred_type(["application/json", CBOR_MEDIA_TYPE])
        return preferred == CBOR_MEDIA_TYPE
    return _media_type(request.headers.get("Content-Type", "")) == CBOR_MEDIA_TYPE


def error_response(request: HttpRequest, status: int, errors: Errors) -> HttpResponse:
    payload = {"errors": errors}
    if prefers_cbor(request):
        return HttpResponse(encode_cbor(payload), status=status, content_type=CBOR_MEDIA_TYPE)
    return HttpResponse(
        JSONRenderer().render(payload), status=status, content_type="application/json"
    )


def unless_safe(request: HttpRequest) -> HttpResponse | None:
    """The 405 of a GET/HEAD-only resource (with ``Allow``), or ``None`` for GET and HEAD.

    (Django's ``require_GET`` refuses HEAD and answers 405 with an HTML body.)
    """
    if request.method in ("GET", "HEAD"):
        return None
    response = error_response(request, 405, {"detail": [f"{request.method} not allowed"]})
    response["Allow"] = "GET, HEAD"
    return response
