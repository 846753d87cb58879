"""Every HTTP error, in the contract's format, from one place.

``{"errors": {"<field or 'detail'>": ["message", ...]}}`` as JSON, or as CBOR
when the client prefers CBOR (or sent CBOR and expressed no preference). No
stack trace and no HTML page ever reaches a client.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse
from rest_framework import exceptions as drf

from formats.errors import Errors, error_response
from images.errors import (
    DomainError,
    Forbidden,
    ImageConflict,
    ImageNotFound,
    ImageTooLarge,
    InvalidInput,
    RateLimited,
    TooCostly,
    Unauthenticated,
    Unavailable,
    UnsupportedMediaType,
    for_error,
)
from images.identity import www_authenticate

logger = logging.getLogger(__name__)

DOMAIN_STATUS: dict[type[DomainError], int] = {
    InvalidInput: 400,
    UnsupportedMediaType: 415,
    ImageTooLarge: 413,
    TooCostly: 422,
    ImageConflict: 409,
    ImageNotFound: 404,
    Unauthenticated: 401,
    Forbidden: 403,
    RateLimited: 429,
    Unavailable: 503,
}


def status_for(exc: DomainError) -> int:
    return for_error(DOMAIN_STATUS, exc, 400)


def _flatten(detail: Any) -> list[str]:
    if isinstance(detail, dict):
        return [msg for value in detail.values() for msg in _flatten(value)]
    if isinstance(detail, list):
        return [msg for value in detail for msg in _flatten(value)]
    return [str(detail)]


def _drf_errors(exc: drf.APIException) -> Errors:
    detail = exc.detail
    if isinstance(detail, dict):
        return {str(field): _flatten(value) for field, value in detail.items()}
    return {"detail": _flatten(detail)}


def exception_handler(exc: Exception, context: dict[str, Any]) -> HttpResponse:
    """DRF's EXCEPTION_HANDLER: typed exceptions carry their status."""
    return response_for_exception(context["request"]._request, exc)


def response_for_exception(request: HttpRequest, exc: Exception) -> HttpResponse:
    """The error response for ``exc``; unexpected exceptions are logged, answered 500."""
    headers: dict[str, str] = {}
    if isinstance(exc, (OperationalError, InterfaceError)):
        # The database went away, or stayed locked past its timeout: the
        # request was not carried out, and may be sent again (API.md §10).
        logger.warning("database unavailable on %s %s: %s", request.method, request.path, exc)
        exc = Unavailable(f"the database is not available ({type(exc).__name__})")
    if isinstance(exc, DomainError):
        status, errors = status_for(exc), {exc.field: [exc.message]}
        if isinstance(exc, (Unavailable, RateLimited)):
            headers["Retry-After"] = str(exc.retry_after)
        if isinstance(exc, Unauthenticated):
            headers["WWW-Authenticate"] = www_authenticate(request)
    elif isinstance(exc, drf.APIException):
        status, errors = exc.status_code, _drf_errors(exc)
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))
    elif isinstance(exc, Http404):
        status, errors = 404, {"detail": ["not found"]}
    elif isinstance(exc, SuspiciousOperation):
        # Django's own guards: too many query fields, a bad Host header...
        status, errors = 400, {"detail": [f"bad request: {type(exc).__name__}"]}
    elif isinstance(exc, PermissionDenied):
        status, errors = 403, {"detail": ["permission denied"]}
    else:
        logger.exception("unhandled error on %s %s", request.method, request.path)
        status, errors = 500, {"detail": ["internal error; the request was not completed"]}
    response = error_response(request, status, errors)
    for name, value in headers.items():
        response[name] = value
    return response


# Django's own handlers, for what never reaches a DRF view (unknown URLs,
# disallowed hosts). Django uses them only with DEBUG off; the catch-all URL
# pattern covers unknown URLs in development too.
def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return error_response(request, 400, {"detail": ["bad request"]})


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return error_response(request, 403, {"detail": ["permission denied"]})


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return error_response(request, 404, {"detail": [f"no resource at {request.path}"]})


def server_error(request: HttpRequest) -> HttpResponse:
    return error_response(request, 500, {"detail": ["internal error"]})
