"""The download fast path: ``GET``/``HEAD`` of an image, before Django's full handler.

Downloads are the hot path (API.md §0: readers re-fetch the same image
often), and Django's handler costs more than the download itself: measured
in-process (``python bench/download_profile.py``), a view that returns an
empty ``200`` at once costs 100 us through the service's middleware, signals
and handler, and a by-id download 277 us in all. Of that floor, nesting nine
middleware layers (each in ``convert_exception_to_response`` and
``MiddlewareMixin.__call__``) and resolving the URL against every route
before it are the part a download does not need.

:class:`FastPathApplication` wraps the WSGI application. A request it is
sure of (``GET`` or ``HEAD`` of ``/collections/images/<uuid>`` or of
``/collections/images``, no ``SCRIPT_NAME``) it answers itself, with the very
pieces Django's handler uses, in Django's order:

- ``request_started`` and ``request_finished`` (connection hygiene, the
  cache's), ``WSGIRequest``, the URLconf, ``log_response`` for 4xx and 5xx;
- every class of ``settings.MIDDLEWARE``, as hooks (``process_request``,
  ``process_view``, ``process_response``, ``process_exception``), called in
  a flat loop with the same short-circuits and the same conversion of an
  exception to a response at each layer as Django's nested chain; so the
  request log, metrics, Host validation (a disallowed Host is ``400``), the
  security headers, CSRF and sessions behave as through Django;
- the view the URLconf names for the route (checked once, at the first
  request: a URLconf that routes these paths elsewhere turns the fast path
  off), called through Django's own ``BaseHandler._get_response``; only
  the URL resolution is replaced, by a match built like the resolver's.

Everything else goes to Django's handler, and so does every request when a
middleware is not hook-shaped (a plain callable's ``__call__`` cannot be
split into hooks) or ``IMAGES_DOWNLOAD_FAST_PATH`` is off. The download's
rules stay where they are: who may read (``http/auth``), the lookup
(``selectors``), conditional requests, ranges and headers (``http/downloads``),
errors (``http/errors``).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core import signals
from django.core.exceptions import MiddlewareNotUsed
from django.core.handlers.base import BaseHandler
from django.core.handlers.exception import response_for_exception
from django.core.handlers.wsgi import WSGIHandler, WSGIRequest
from django.http import HttpRequest, HttpResponseBase
from django.urls import ResolverMatch, get_resolver, set_script_prefix
from django.utils.deprecation import MiddlewareMixin
from django.utils.log import log_response
from django.utils.module_loading import import_string

logger = logging.getLogger(__name__)

# Django's ``uuid`` path converter, exactly (lowercase hex, dashed).
_BY_ID = re.compile(
    r"/collections/images/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
)
_BY_KEY = "/collections/images"
_SAMPLE_ID = "00000000-0000-0000-0000-000000000000"
# The views these paths must resolve to for the fast path to serve them.
_VIEWS = {_BY_KEY: "ImageCollectionView", f"{_BY_KEY}/{_SAMPLE_ID}": "ImageItemView"}

WSGIEnviron = dict[str, Any]
StartResponse = Callable[..., Any]


@dataclass(frozen=True)
class _Layer:
    """One middleware's hooks (``None`` where it has none)."""

    process_request: Callable[[HttpRequest], HttpResponseBase | None] | None
    process_response: Callable[[HttpRequest, HttpResponseBase], HttpResponseBase] | None


class _ViewHandler(BaseHandler):
    """Django's view phase (``_get_response``) with the route already matched.

    ``process_view``, ``process_exception`` and ``process_template_response``
    hooks, ``ATOMIC_REQUESTS`` and the check for a view returning ``None``
    are Django's own code; only the resolver is skipped when the request
    carries the fast path's match (and no middleware set ``request.urlconf``).
    """

    def resolve_request(self, request: HttpRequest) -> ResolverMatch:
        match = getattr(request, "fast_path_match", None)
        if match is None or hasattr(request, "urlconf"):
            return super().resolve_request(request)
        request.resolver_match = match
        return match


class FastPathApplication:
    """A WSGI application: downloads through the fast path, anything else through ``django``."""

    def __init__(self, django: WSGIHandler) -> None:
        self.django = django
        self.view_handler = _ViewHandler()
        self.view_handler.load_middleware()  # the view-phase hooks, as Django lists them
        self.layers = _layers(settings.MIDDLEWARE)
        self.matches: dict[str, ResolverMatch] | None = None

    def __call__(self, environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        template, kwargs = self._route(environ)
        if template is None:
            return self.django(environ, start_response)
        return self._serve(environ, start_response, template, kwargs)

    def _route(self, environ: WSGIEnviron) -> tuple[ResolverMatch | None, dict[str, Any]]:
        """The route's resolver match (a template) and the URL's arguments; ``None`` if unsure."""
        if (
            environ.get("REQUEST_METHOD") not in ("GET", "HEAD")
            or environ.get("SCRIPT_NAME")
            or self.layers is None
            or not settings.IMAGES_DOWNLOAD_FAST_PATH
        ):
            return None, {}
        path = environ.get("PATH_INFO", "")
        if path == _BY_KEY:
            key, kwargs = _BY_KEY, {}
        elif (found := _BY_ID.fullmatch(path)) is not None:
            key, kwargs = f"{_BY_KEY}/{_SAMPLE_ID}", {"image_id": uuid.UUID(found[1])}
        else:
            return None, {}
        if self.matches is None:
            self.matches = _checked_matches()
        return self.matches.get(key), kwargs

    def _serve(
        self,
        environ: WSGIEnviron,
        start_response: StartResponse,
        template: ResolverMatch,
        kwargs: dict[str, Any],
    ) -> Iterable[bytes]:
        """What ``WSGIHandler.__call__`` and ``BaseHandler.get_response`` do, in their order."""
        handler_class = type(self.django)
        set_script_prefix(settings.FORCE_SCRIPT_NAME or "/")  # no SCRIPT_NAME here
        signals.request_started.send(sender=handler_class, environ=environ)
        request = WSGIRequest(environ)
        request.fast_path_match = ResolverMatch(
            template.func,
            (),
            kwargs,
            template.url_name,
            template.app_names,
            template.namespaces,
            template.route,
            template.tried,
            captured_kwargs=kwargs,
        )
        # Django's get_response sets the thread's URLconf to ROOT_URLCONF here;
        # unset, it is the same one (reset_urlconf unsets it at request_finished).
        response = self._through_middleware(request)
        response._resource_closers.append(request.close)
        if response.status_code >= 400:
            log_response(
                "%s: %s", response.reason_phrase, request.path, response=response, request=request
            )
        response._handler_class = handler_class
        start_response(
            f"{response.status_code} {response.reason_phrase}",
            [
                *response.items(),
                *(("Set-Cookie", c.output(header="")) for c in response.cookies.values()),
            ],
        )
        if getattr(response, "file_to_stream", None) is not None and environ.get(
            "wsgi.file_wrapper"
        ):
            response.file_to_stream.close = response.close
            return environ["wsgi.file_wrapper"](response.file_to_stream, response.block_size)
        return response

    def _through_middleware(self, request: HttpRequest) -> HttpResponseBase:
        """Django's nested middleware chain, flat: the same calls and the same short-circuits.

        Each layer of Django's chain is ``convert_exception_to_response`` around
        ``MiddlewareMixin.__call__``: a response from ``process_request`` goes
        back through that layer's ``process_response`` and the outer ones; an
        exception in a layer's hook becomes a response (``response_for_exception``)
        that only the outer layers see.
        """
        layers = self.layers
        assert layers is not None
        depth = len(layers)
        response = None
        for index, layer in enumerate(layers):
            if layer.process_request is None:
                continue
            try:
                response = layer.process_request(request)
            except Exception as exc:  # noqa: BLE001 - Django's chain converts it here too
                response, depth = response_for_exception(request, exc), index
                break
            if response is not None:
                depth = index + 1
                break
        if response is None:
            try:
                response = self.view_handler._get_response(request)
            except Exception as exc:  # noqa: BLE001 - as above
                response = response_for_exception(request, exc)
        for layer in reversed(layers[:depth]):
            if layer.process_response is None:
                continue
            try:
                response = layer.process_response(request, response)
            except Exception as exc:  # noqa: BLE001 - as above
                response = response_for_exception(request, exc)
        return response


def _layers(paths: list[str]) -> list[_Layer] | None:
    """Each middleware's hooks, outermost first; ``None`` if one cannot be split into hooks."""
    layers = []
    for path in paths:
        middleware_class = import_string(path)
        try:
            middleware = middleware_class(_never_called)
        except MiddlewareNotUsed:
            continue
        if not isinstance(middleware, MiddlewareMixin) or (
            type(middleware).__call__ is not MiddlewareMixin.__call__
        ):
            logger.info("download fast path off: %s is not a hook-only middleware", path)
            return None
        layers.append(
            _Layer(
                getattr(middleware, "process_request", None),
                getattr(middleware, "process_response", None),
            )
        )
    return layers


def _never_called(request: HttpRequest) -> HttpResponseBase:
    raise AssertionError("the fast path calls middleware hooks, never get_response")


def _checked_matches() -> dict[str, ResolverMatch]:
    """The URLconf's matches for the fast path's routes, where they name the expected views."""
    from images.http import views

    matches = {}
    for path, view_name in _VIEWS.items():
        match = get_resolver().resolve(path)
        if getattr(match.func, "view_class", None) is getattr(views, view_name):
            matches[path] = match
        else:
            logger.warning("download fast path off for %s: the URLconf routes it elsewhere", path)
    return matches


def application(django: WSGIHandler) -> FastPathApplication:
    """``django`` behind the download fast path (``config.wsgi``)."""
    return FastPathApplication(django)
