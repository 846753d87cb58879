"""Where a download's time goes, stage by stage (cProfile; ``bench/download_profile.py --stages``).

Each stage is the cumulative time of named functions (found by their code
objects, so a stage is exactly those functions and what they call); what no
stage names is the handler's own part: the request object, the
``request_started``/``request_finished`` signals, the middleware loop (or
Django's nested chain and URL resolver when the fast path is off) and the
WSGI status and headers. Times are under the profiler, which inflates them
(about 2x here); read the shares.
"""

from __future__ import annotations

import cProfile
import pstats
from collections.abc import Callable
from types import CodeType
from typing import Any


def _key(function: Callable[..., Any]) -> tuple[str, int, str]:
    code: CodeType = function.__code__
    return code.co_filename, code.co_firstlineno, code.co_name


def _middleware_hooks() -> tuple[list[Callable], list[Callable]]:
    """The request log's hooks, and every other configured middleware's."""
    from django.conf import settings
    from django.utils.module_loading import import_string

    from ops.middleware import RequestLogMiddleware

    # A checkout before the hooks: its __call__ wraps the whole chain, so its share
    # stays in the handler's.
    ours = [
        getattr(RequestLogMiddleware, name)
        for name in ("process_request", "process_response")
        if hasattr(RequestLogMiddleware, name)
    ]
    others: dict[tuple[str, int, str], Callable] = {}
    for path in settings.MIDDLEWARE:
        cls = import_string(path)
        if cls is RequestLogMiddleware:
            continue
        for name in ("process_request", "process_view", "process_response"):
            hook = getattr(cls, name, None)
            if hook is not None and hasattr(hook, "__code__"):
                others[_key(hook)] = hook
    return ours, list(others.values())


def print_stages(request: Callable[[], object], requests: int) -> None:
    """Profile ``requests`` calls of ``request`` and print each stage's time per request."""
    from django.core.handlers.wsgi import WSGIHandler

    from images import selectors
    from images.http import views

    try:
        from images.http.fastpath import FastPathApplication
    except ImportError:  # a checkout before the fast path (bench.sidebyside --also)
        FastPathApplication = WSGIHandler  # noqa: N806
    from ops import metrics

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(requests):
        request()
    profiler.disable()
    stats: dict = pstats.Stats(profiler).stats  # (file, line, name) -> (cc, nc, tt, ct, callers)

    def cumulative(*functions: Callable) -> float:
        return sum(stats.get(_key(f), (0, 0, 0, 0.0))[3] for f in functions) / requests * 1e6

    # Off, the fast path hands over to Django's handler (a checkout without it: Django's alone).
    total = cumulative(FastPathApplication.__call__) or cumulative(WSGIHandler.__call__)
    log_hooks, django_hooks = _middleware_hooks()
    observe = cumulative(metrics.observe_request)
    query = cumulative(selectors.image_get, selectors.image_find)
    response = cumulative(views.image_or_metadata)
    view = cumulative(views.DownloadFastPath.dispatch) - query - response
    stages = [
        ("Django's middleware hooks (security, Host, CSRF, ...)", cumulative(*django_hooks)),
        # A checkout whose request log wraps the chain (no hooks): in the handler's share.
        ("request log line (its hooks, metrics aside)", cumulative(*log_hooks) - observe)
        if log_hooks
        else ("request log line (in the handler's share)", 0.0),
        ("metrics (counter and histogram)", observe),
        ("query (selectors: one row, the model instance)", query),
        ("response (headers, checked bytes)", response),
        ("view (read rule, Vary, the view instance)", view),
    ]
    named = sum(us for _, us in stages)
    stages.append(("handler (request, signals, chain or loop, WSGI)", total - named))
    print(f"\nper stage, {requests} by-id downloads under cProfile (us per request, profiled)")
    for label, us in stages:
        print(f"  {label:<55} {us:7.1f}  {us / total:6.1%}")
    print(f"  {'total':<55} {total:7.1f}")
