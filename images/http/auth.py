"""Access policy at the HTTP edge (API.md §6): who may do what, and how often.

``settings.IMAGES_AUTH`` picks the mode:

- ``open`` (the default, as the original prototype): anyone may do anything;
  nothing here even reads a header.
- ``token``: every rule below applies.

The rules, each written once here and used by the DRF views (through the
authentication, permission and throttle classes below), by the download
fast path (:func:`check_read`) and by the gallery pages (:func:`page_allows`):

- **read** (downloads, metadata, listings, thumbnails): a reader or device
  token, or a logged-in staff user (the gallery's session).
- **upload**: the device token of the ``deviceId`` uploaded as. Whether the
  client holds a device token at all is checked before the body is read;
  whether it is this device's, once the body says which device it is (raw
  uploads: from the query, still before the body is read).
- **delete**: a staff user, or the device token of the image's device (a
  device may take back what it sent; readers never delete).

No credentials, or a bearer token that is malformed, unknown or revoked:
``401`` with a ``WWW-Authenticate: Bearer`` challenge (RFC 6750 §3).
Credentials that do not allow the request: ``403``. Discovery, ``/healthz``,
``/metrics``, the OpenAPI schema and its docs stay open in both modes.

Upload rates (both modes, when set; on by default in token mode): per device
(``IMAGES_RATE_DEVICE``) and per client address (``IMAGES_RATE_CLIENT``),
``429`` with ``Retry-After`` (RFC 6585 §4), counted by :mod:`ops.ratelimit`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.core.cache import cache
from django.http import HttpRequest
from rest_framework.authentication import BaseAuthentication, SessionAuthentication
from rest_framework.exceptions import (
    AuthenticationFailed,
    NotAuthenticated,
    PermissionDenied,
    Throttled,
)
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from images.models import Image, Token
from images.tokens import token_authenticate, token_may_read, token_may_upload
from ops.ratelimit import parse_rate, rate_hit

REALM = "images"
# RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# Ours are 47 characters; anything much longer is not one (and is not hashed).
_TOKEN_MAX_LENGTH = 200


def token_mode() -> bool:
    """True when the rules apply (``IMAGES_AUTH=token``); read per request, tests override it."""
    return settings.IMAGES_AUTH == "token"


# --- The rules ---------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """What a request proved: a live token, or a staff user's session, or nothing."""

    token: Token | None = None
    staff: bool = False

    @property
    def anonymous(self) -> bool:
        return self.token is None and not self.staff


ANONYMOUS = Credentials()


def may_read(credentials: Credentials) -> bool:
    """Reader and device tokens read, and so do staff users."""
    return credentials.staff or token_may_read(credentials.token)


def may_upload(credentials: Credentials, device_id: str | None = None) -> bool:
    """A device token, for ``device_id``.

    ``None`` asks before the device is known (before the body is read):
    whether the token may upload as its own device, i.e. is a device token.
    """
    token = credentials.token
    if token is None:
        return False
    return token_may_upload(token, token.subject if device_id is None else device_id)


def may_export(credentials: Credentials, device_id: str) -> bool:
    """A whole device's images at once: staff, a reader token, or that device's own token."""
    token = credentials.token
    if credentials.staff or (token is not None and token.kind == Token.Kind.READER):
        return True
    return token_may_upload(token, device_id)


def may_delete(credentials: Credentials, device_id: str | None = None) -> bool:
    """A staff user, or the device token of the image's device (``None``: of any device)."""
    return credentials.staff or may_upload(credentials, device_id)


# --- Credentials from a request ----------------------------------------------------


def _bearer_header(request: HttpRequest) -> str | None:
    """The credentials of an ``Authorization: Bearer`` header, or None for another scheme."""
    scheme, _, credentials = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    # RFC 9110 §11.1: the scheme name is case-insensitive.
    return credentials.strip() if scheme.lower() == "bearer" else None


def request_token(request: HttpRequest) -> Token | None:
    """The live token a request bears (RFC 6750 §2.1); None when it bears none.

    A bearer token that is malformed, unknown or revoked raises
    ``AuthenticationFailed`` (401, ``error="invalid_token"``). The lookup is
    by the token's hash (see :func:`images.tokens.token_authenticate`), so
    its time says nothing about how close a guess was.
    """
    raw = _bearer_header(request)
    if raw is None:
        return None
    if len(raw) > _TOKEN_MAX_LENGTH or not _B64TOKEN.fullmatch(raw):
        raise AuthenticationFailed("the bearer token is malformed")
    token = token_authenticate(raw)
    if token is None:
        raise AuthenticationFailed("the bearer token is unknown or revoked")
    return token


def request_staff(request: HttpRequest) -> bool:
    """Whether the session is a logged-in, active staff user's.

    ``request.user`` is Django's lazy user: without a session cookie it is
    anonymous without a query.
    """
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_active and user.is_staff)


def request_credentials(request: HttpRequest) -> Credentials:
    """A bearer token when one is sent (then the session is not read), else the session."""
    token = request_token(request)
    if token is not None:
        return Credentials(token=token)
    return Credentials(staff=request_staff(request))


def www_authenticate(request: HttpRequest) -> str:
    """The challenge of a 401 (RFC 6750 §3): ``invalid_token`` when a bearer token was refused."""
    if _bearer_header(request) is not None:
        return f'Bearer realm="{REALM}", error="invalid_token"'
    return f'Bearer realm="{REALM}"'


def refusal(credentials: Credentials, message: str) -> NotAuthenticated | PermissionDenied:
    """401 for a request without credentials, 403 for one whose credentials do not suffice."""
    if credentials.anonymous:
        return NotAuthenticated()
    return PermissionDenied(message)


# --- Outside DRF: the download fast path and the gallery pages ---------------------


def check_read(request: HttpRequest) -> None:
    """The read rule for views that bypass DRF's request cycle; raises 401 or 403."""
    if not token_mode():
        return
    try:
        credentials = request_credentials(request)
        if not may_read(credentials):
            raise refusal(credentials, "reading needs a reader or device token")
    except (NotAuthenticated, AuthenticationFailed) as exc:
        # What DRF's APIView.handle_exception does for its own views.
        exc.auth_header = www_authenticate(request)
        raise


def check_export(request: HttpRequest, device_id: str) -> None:
    """The export rule (:func:`may_export`); raises 401 or 403."""
    if not token_mode():
        return
    try:
        credentials = request_credentials(request)
        if not may_export(credentials, device_id):
            raise refusal(credentials, "exporting needs a reader token or the device's own")
    except (NotAuthenticated, AuthenticationFailed) as exc:
        exc.auth_header = www_authenticate(request)
        raise


def page_allows(request: HttpRequest, rule: Callable[[Credentials], bool]) -> bool:
    """Whether an HTML page may be shown; a refused bearer token counts as none."""
    if not token_mode():
        return True
    try:
        credentials = request_credentials(request)
    except AuthenticationFailed:
        credentials = ANONYMOUS
    return rule(credentials)


def cache_visibility() -> str:
    """``public`` in open mode; ``private`` in token mode.

    RFC 9111 §3.5: ``public`` would let a shared cache hand a response to an
    authorised request to anyone; ``private`` keeps it in the client's cache.
    """
    return "private" if token_mode() else "public"


def vary_on() -> tuple[str, ...]:
    """What besides the URL an answer depends on, for ``Vary`` (RFC 9110 §12.5.5)."""
    return ("Authorization",) if token_mode() else ()


# --- DRF: authentication, permission, throttles --------------------------------------


class BearerTokenAuthentication(BaseAuthentication):
    """``Authorization: Bearer <token>`` (RFC 6750 §2.1), in token mode."""

    def authenticate(self, request: Request) -> tuple[AnonymousUser, Token] | None:
        if not token_mode():
            return None
        token = request_token(request._request)
        # A token is not a Django user: the user stays anonymous, request.auth is the token.
        return None if token is None else (AnonymousUser(), token)

    def authenticate_header(self, request: Request) -> str:
        return www_authenticate(request._request)


class StaffSessionAuthentication(SessionAuthentication):
    """A logged-in staff user's session (the gallery's own requests), in token mode.

    Django's session check, CSRF included for unsafe methods; other users'
    sessions count as no credentials.
    """

    def authenticate(self, request: Request) -> tuple[Any, None] | None:
        if not token_mode() or not request_staff(request._request):
            return None
        return super().authenticate(request)


def drf_credentials(request: Request) -> Credentials:
    """The :class:`Credentials` the authentication classes above established."""
    if isinstance(request.auth, Token):
        return Credentials(token=request.auth)
    return Credentials(
        staff=isinstance(request.successful_authenticator, StaffSessionAuthentication)
    )


class ImageAccess(BasePermission):
    """The rules by method: ``POST`` uploads, ``DELETE`` deletes, anything else reads.

    The object of :meth:`has_object_permission` is the ``deviceId`` an
    upload claims, or the :class:`Image` to delete. DRF answers a refusal
    401 when no authentication class succeeded, else 403 with ``message``.
    """

    message = "these credentials do not allow this request"

    def has_permission(self, request: Request, view: Any) -> bool:
        if not token_mode():
            return True
        credentials = drf_credentials(request)
        if request.method == "POST":
            self.message = "uploads need a device token"
            return may_upload(credentials)
        if request.method == "DELETE":
            self.message = "deleting needs a staff user or the image's device token"
            return may_delete(credentials)
        return may_read(credentials)

    def has_object_permission(self, request: Request, view: Any, obj: str | Image) -> bool:
        if not token_mode():
            return True
        credentials = drf_credentials(request)
        if request.method == "POST":
            self.message = f"this token may not upload as device {obj!r}"
            return isinstance(obj, str) and may_upload(credentials, obj)
        if request.method == "DELETE":
            self.message = "deleting needs a staff user or the image's device token"
            return isinstance(obj, Image) and may_delete(credentials, obj.device_id)
        return may_read(credentials)


def _rate_wait(scope: str, identity: str, setting: str) -> int | None:
    rate = parse_rate(setting)
    if rate is None:
        return None
    return rate_hit(cache, scope=scope, identity=identity, rate=rate)


class ClientUploadThrottle(BaseThrottle):
    """``IMAGES_RATE_CLIENT`` uploads per client address; checked before the body is read.

    The address is ``REMOTE_ADDR``, or behind ``NUM_PROXIES`` trusted
    proxies the one they report in ``X-Forwarded-For`` (DRF's ``get_ident``).
    """

    def allow_request(self, request: Request, view: Any) -> bool:
        self.retry_after: int | None = None
        if request.method == "POST":
            self.retry_after = _rate_wait(
                "upload-client", self.get_ident(request), settings.IMAGES_RATE_CLIENT
            )
        return self.retry_after is None

    def wait(self) -> int | None:
        return self.retry_after


def check_device_rate(device_id: str) -> None:
    """``IMAGES_RATE_DEVICE`` uploads per device; ``Throttled`` (429) past it."""
    wait = _rate_wait("upload-device", device_id, settings.IMAGES_RATE_DEVICE)
    if wait is not None:
        raise Throttled(wait=wait, detail=f"too many uploads from device {device_id!r}.")
