"""The service's routes plus Django's floor: an empty ``200`` (``bench/download_profile.py``)."""

from django.http import HttpRequest, HttpResponse
from django.urls import path

from config.urls import handler400, handler403, handler404, handler500, urlpatterns

__all__ = ["handler400", "handler403", "handler404", "handler500", "urlpatterns"]


def floor(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"")


# First, so that resolving it costs the least a route can.
urlpatterns = [path("collections/bench-floor", floor), *urlpatterns]
