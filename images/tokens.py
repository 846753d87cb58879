"""Access tokens: issue, revoke, authenticate (API.md §6).

Pure domain code; the HTTP and CoAP front ends decide when to ask.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from django.utils import timezone

from images import live
from images.models import Token

PREFIX = "img_"


def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def token_issue(*, kind: str, subject: str) -> tuple[Token, str]:
    """A new token; the raw value is returned once and never stored."""
    raw = PREFIX + secrets.token_urlsafe(32)
    token = Token.objects.create(kind=kind, subject=subject, digest=_digest(raw))
    return token, raw


def token_revoke(*, raw_or_id: str) -> int:
    """Revoke by raw token or by id; the number of tokens revoked (0 or 1)."""
    match = Token.objects.filter(revoked_at__isnull=True)
    match = (
        match.filter(pk=int(raw_or_id))
        if raw_or_id.isdigit()
        else match.filter(digest=_digest(raw_or_id))
    )
    revoked = list(match.values_list("pk", flat=True))
    count = Token.objects.filter(pk__in=revoked).update(revoked_at=timezone.now())
    # Event streams these tokens opened end now, in every instance (API.md §13).
    live.tokens_revoked(revoked)
    return count


def token_authenticate(raw: str) -> Token | None:
    """The live token ``raw`` names, or None.

    The lookup is by the token's SHA-256 through a unique index, so its time
    does not depend on how much of a guess matches a real token; the final
    comparison is constant-time as well.
    """
    digest = _digest(raw)
    token = Token.objects.filter(digest=digest, revoked_at__isnull=True).first()
    if token is None or not hmac.compare_digest(token.digest, digest):
        return None
    return token
