"""One structured log line per request, with a request id, and request metrics."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from ops import metrics

logger = logging.getLogger("requests")

# A caller's (proxy's) id is kept when it is short and printable; otherwise we
# make one, so a hostile header cannot forge or flood log lines.
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class RequestLogMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        offered = request.META.get("HTTP_X_REQUEST_ID", "")
        request_id = offered if _CLIENT_ID.fullmatch(offered) else uuid.uuid4().hex
        request.request_id = request_id
        response = self.get_response(request)
        elapsed = time.perf_counter() - started
        match = getattr(request, "resolver_match", None)
        route = match.route if match is not None and match.route else "unmatched"
        metrics.observe_request(request.method or "", route, response.status_code, elapsed)
        response["X-Request-ID"] = request_id
        if logger.isEnabledFor(logging.INFO):
            logger.info(self._line(request, response, request_id, route, elapsed))
        return response

    @staticmethod
    def _line(
        request: HttpRequest, response: HttpResponse, request_id: str, route: str, elapsed: float
    ) -> str:
        return json.dumps(
            {
                "request_id": request_id,
                "method": request.method,
                "path": request.path,
                "route": route,
                "status": response.status_code,
                "ms": round(elapsed * 1000, 2),
                "bytes_in": int(request.META.get("CONTENT_LENGTH") or 0),
                "remote": request.META.get("REMOTE_ADDR", ""),
            },
            ensure_ascii=False,
        )
