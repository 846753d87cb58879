"""Who a request is, at the HTTP edge (API.md §6); what it may do is :mod:`images.access`'s.

In token mode (``IMAGES_AUTH=token``) a request proves who it is with an
``Authorization: Bearer`` token (RFC 6750 §2.1) of a device or a reader, or
with a logged-in staff user's session (the gallery's). This module turns
that into an :class:`images.access.Principal` and asks the rules there:
through DRF's authentication and permission classes below, in the download
fast path (:func:`check_read`), for exports (:func:`check_export`) and for
the gallery's pages (:func:`page_allows`). In open mode nothing here even
reads a header.

No credentials, or a bearer token that is malformed, unknown or revoked:
``401`` with a ``WWW-Authenticate: Bearer`` challenge (RFC 6750 §3).
Credentials that do not allow the request: ``403``. Discovery, ``/healthz``,
``/metrics``, the OpenAPI schema and its docs stay open in both modes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest
from rest_framework.authentication import BaseAuthentication, SessionAuthentication
from rest_framework.exceptions import (
    AuthenticationFailed,
)
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from images import access, identity
from images.access import Principal
from images.models import Image, Token


def _judged(request: HttpRequest, allowed: Callable[[Principal], bool], message: str) -> None:
    """401 (a domain error that carries the challenge) or 403 unless ``allowed(principal)``."""
    principal = identity.request_principal(request)
    access.require(allowed(principal), principal, message)


# --- Outside DRF: the download fast path and exports ----------------------------------


def check_read(request: HttpRequest, device_id: str | None = None) -> None:
    """The read rule for views that bypass DRF's request cycle; raises 401 or 403.

    ``device_id``: the images read are that device's (``None``: before they are known).
    """
    if access.rules_apply():
        _judged(
            request,
            lambda principal: access.may_read(principal, device_id),
            "reading needs a reader token, or the device's own",
        )


def check_export(request: HttpRequest, device_id: str) -> None:
    """The export rule (:func:`images.access.may_export`); raises 401 or 403."""
    if access.rules_apply():
        _judged(
            request,
            lambda principal: access.may_export(principal, device_id),
            "exporting needs a reader token or the device's own",
        )


def client_address(request: HttpRequest) -> str:
    """The client's address: behind NUM_PROXIES trusted proxies, what they report.

    DRF's throttles read it this way (``REST_FRAMEWORK["NUM_PROXIES"]``);
    the upload rate limits and the per-client stream cap use the same.
    """
    return BaseThrottle().get_ident(request)


def vary_on() -> tuple[str, ...]:
    """What besides the URL an answer depends on, for ``Vary`` (RFC 9110 §12.5.5)."""
    return ("Authorization",) if access.rules_apply() else ()


# --- DRF: authentication, permission, throttles --------------------------------------


class BearerTokenAuthentication(BaseAuthentication):
    """``Authorization: Bearer <token>`` (RFC 6750 §2.1), in token mode."""

    def authenticate(self, request: Request) -> tuple[AnonymousUser, Token] | None:
        if not access.rules_apply():
            return None
        try:
            token = identity.request_token(request._request)
        except identity.InvalidToken as exc:
            raise AuthenticationFailed(exc.message) from None
        # A token is not a Django user: the user stays anonymous, request.auth is the token.
        return None if token is None else (AnonymousUser(), token)

    def authenticate_header(self, request: Request) -> str:
        return identity.www_authenticate(request._request)


class StaffSessionAuthentication(SessionAuthentication):
    """A logged-in staff user's session (the gallery's own requests), in token mode.

    Django's session check, CSRF included for unsafe methods; other users'
    sessions count as no credentials.
    """

    def authenticate(self, request: Request) -> tuple[Any, None] | None:
        if not access.rules_apply() or not identity.request_staff(request._request):
            return None
        return super().authenticate(request)


def drf_principal(request: Request) -> Principal:
    """The :class:`Principal` the authentication classes above established."""
    token = request.auth if isinstance(request.auth, Token) else None
    staff = isinstance(request.successful_authenticator, StaffSessionAuthentication)
    return identity.principal_for(token, staff=staff)


class ImageAccess(BasePermission):
    """The rules by method: ``POST`` uploads, ``DELETE`` deletes, anything else reads.

    An upload's device is judged by :class:`images.uploads.Upload` once it
    is known; an image to delete by :meth:`has_object_permission`. DRF
    answers a refusal 401 when no authentication class succeeded, else 403
    with ``message``.
    """

    message = "these credentials do not allow this request"

    def has_permission(self, request: Request, view: Any) -> bool:
        if not access.rules_apply():
            return True
        principal = drf_principal(request)
        if request.method == "POST":
            self.message = "uploads need a device token"
            return access.may_upload(principal)
        if request.method == "DELETE":
            self.message = "deleting needs a staff user or the image's device token"
            return access.may_delete(principal)
        return access.may_read(principal)

    def has_object_permission(self, request: Request, view: Any, obj: Image) -> bool:
        if not access.rules_apply():
            return True
        self.message = "deleting needs a staff user or the image's device token"
        return access.may_delete(drf_principal(request), obj.device_id)
