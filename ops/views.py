"""Operations endpoints: health and metrics."""

from __future__ import annotations

import functools
from collections.abc import Callable

from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse

from images.http.errors import error_response
from ops import metrics

View = Callable[[HttpRequest], HttpResponse]


def get_only(view: View) -> View:
    """GET and HEAD only; anything else is a 405 in the contract's error format.

    (Django's ``require_GET`` refuses HEAD and answers 405 with an HTML body.)
    """

    @functools.wraps(view)
    def wrapper(request: HttpRequest) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            response = error_response(request, 405, {"detail": [f"{request.method} not allowed"]})
            response["Allow"] = "GET, HEAD"
            return response
        return view(request)

    return wrapper


@get_only
def healthz(request: HttpRequest) -> HttpResponse:
    """200 when the database answers a query, 503 when it does not."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as exc:
        return JsonResponse(
            {"status": "unavailable", "database": type(exc).__name__},
            status=503,
            headers={"Cache-Control": "no-store"},
        )
    return JsonResponse(
        {"status": "ok", "database": connection.vendor}, headers={"Cache-Control": "no-store"}
    )


@get_only
def metrics_view(request: HttpRequest) -> HttpResponse:
    body, content_type = metrics.render()
    return HttpResponse(body, content_type=content_type)
