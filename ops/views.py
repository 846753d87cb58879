"""Operations endpoints: health and metrics."""

from __future__ import annotations

import functools
from collections.abc import Callable

from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse

from formats.errors import unless_safe
from images.errors import StorageUnavailable
from images.storage import objects
from ops import metrics

View = Callable[[HttpRequest], HttpResponse]


def get_only(view: View) -> View:
    """GET and HEAD only; anything else is a 405 in the contract's error format."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest) -> HttpResponse:
        return unless_safe(request) or view(request)

    return wrapper


@get_only
def healthz(request: HttpRequest) -> HttpResponse:
    """200 when the database answers a query and the image store (if any) answers; else 503."""
    answer: dict[str, str] = {"status": "ok"}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        answer["database"] = connection.vendor
    except DatabaseError as exc:
        answer |= {"status": "unavailable", "database": type(exc).__name__}
    try:
        objects.store_check()
        answer["storage"] = "s3" if objects.target() else "db"
    except StorageUnavailable:
        answer |= {"status": "unavailable", "storage": "unavailable"}
    headers = {"Cache-Control": "no-store"}
    if answer["status"] != "ok":
        headers["Retry-After"] = str(StorageUnavailable.retry_after)
        return JsonResponse(answer, status=503, headers=headers)
    return JsonResponse(answer, headers=headers)


@get_only
def metrics_view(request: HttpRequest) -> HttpResponse:
    body, content_type = metrics.render()
    return HttpResponse(body, content_type=content_type)
