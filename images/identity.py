"""Who a Django request is (API.md §6): a bearer token's holder, a staff session, or nobody.

Shared by the HTTP API and the gallery's pages, which both receive Django
requests; what a :class:`images.access.Principal` may do is
:mod:`images.access`'s to say.
"""

from __future__ import annotations

import re

from django.http import HttpRequest

from images import access
from images.access import ANONYMOUS, Principal
from images.errors import Unauthenticated
from images.models import Token
from images.tokens import token_authenticate


class InvalidToken(Unauthenticated):
    """A bearer token was sent, but it is malformed, unknown or revoked (401, invalid_token)."""


REALM = "images"
# RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# Ours are 47 characters; anything much longer is not one (and is not hashed).
_TOKEN_MAX_LENGTH = 200


def _bearer_header(request: HttpRequest) -> str | None:
    """The credentials of an ``Authorization: Bearer`` header, or None for another scheme."""
    scheme, _, credentials = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    # RFC 9110 §11.1: the scheme name is case-insensitive.
    return credentials.strip() if scheme.lower() == "bearer" else None


def request_token(request: HttpRequest) -> Token | None:
    """The live token a request bears (RFC 6750 §2.1); None when it bears none.

    A bearer token that is malformed, unknown or revoked raises
    :class:`InvalidToken` (401, ``error="invalid_token"``). The lookup is
    by the token's hash (see :func:`images.tokens.token_authenticate`), so
    its time says nothing about how close a guess was.
    """
    raw = _bearer_header(request)
    if raw is None:
        return None
    if len(raw) > _TOKEN_MAX_LENGTH or not _B64TOKEN.fullmatch(raw):
        raise InvalidToken("the bearer token is malformed")
    token = token_authenticate(raw)
    if token is None:
        raise InvalidToken("the bearer token is unknown or revoked")
    return token


def request_staff(request: HttpRequest) -> bool:
    """Whether the session is a logged-in, active staff user's.

    ``request.user`` is Django's lazy user: without a session cookie it is
    anonymous without a query.
    """
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_active and user.is_staff)


def principal_for(token: Token | None, *, staff: bool = False) -> Principal:
    if token is not None:
        return Principal(str(token.kind), token.subject)
    return Principal(access.STAFF) if staff else ANONYMOUS


def request_principal(request: HttpRequest) -> Principal:
    """Who sent the request: a bearer token's holder (then the session is not read), or staff."""
    token = request_token(request)
    return principal_for(token, staff=token is None and request_staff(request))


def www_authenticate(request: HttpRequest) -> str:
    """The challenge of a 401 (RFC 6750 §3): ``invalid_token`` when a bearer token was refused."""
    if _bearer_header(request) is not None:
        return f'Bearer realm="{REALM}", error="invalid_token"'
    return f'Bearer realm="{REALM}"'


def request_principal_or_anonymous(request: HttpRequest) -> Principal:
    """:func:`request_principal`, with a refused bearer token counting as none (for pages)."""
    try:
        return request_principal(request)
    except InvalidToken:
        return ANONYMOUS
