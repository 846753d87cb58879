"""Webhooks: who receives (``manage.py webhook``), the signature, an attempt's outcome.

A receiver verifies a delivery by computing HMAC-SHA256 of the raw body with
its secret and comparing it with ``Images-Signature`` (docs/integrations.md
shows the few lines). ``Images-Delivery`` is the same on every attempt of
one event to one receiver, so a receiver can drop a repeat.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.db import IntegrityError, transaction

from images.delivery import outbox
from images.delivery.models import WEBHOOK, Receiver
from images.lifecycle.policies import pattern_check

USER_AGENT = "images-webhook/1"


class WebhookRefused(ValueError):
    """A webhook that cannot be registered: the reason is for the operator."""


def webhook_add(url: str, *, device: str = "", secret: str = "") -> Receiver:
    """Register a receiver; it gets the events of images stored or deleted from now on."""
    _check_url(url)
    if device:
        _check_device(device)
    receiver = Receiver(
        kind=WEBHOOK,
        url=url,
        device=device,
        secret=secret or secrets.token_hex(32),
        cursor=outbox.head(),
    )
    try:
        with transaction.atomic():
            receiver.save(force_insert=True)
    except IntegrityError:
        raise WebhookRefused("this URL is already registered for these devices") from None
    outbox.forget_wanted()
    return receiver


def webhooks() -> list[Receiver]:
    return list(Receiver.objects.filter(kind=WEBHOOK).order_by("id"))


def webhook_remove(receiver_id: int) -> bool:
    deleted, _ = Receiver.objects.filter(kind=WEBHOOK, id=receiver_id).delete()
    return bool(deleted)


def _check_url(url: str) -> None:
    if any(ch <= " " or ch == "\x7f" for ch in url):
        raise WebhookRefused("the URL holds a space or a control character: percent-encode it")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookRefused("a webhook URL is http:// or https:// with a host")
    if parts.username or parts.password:
        # It would be printed by ``webhook list`` and logged with errors.
        raise WebhookRefused("put no credentials in the URL: the signature authenticates us")
    if len(url) > Receiver._meta.get_field("url").max_length:
        raise WebhookRefused("the URL is too long")


def _check_device(device: str) -> None:
    # A device id, or a family's prefix ending in "*": named as policies name them.
    try:
        pattern_check(device)
    except ValueError as exc:
        raise WebhookRefused(f"--device {exc}") from None


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Outcome:
    """One attempt's end: ``delivered``, ``refused``, or ``retry`` (not before ``wait`` s)."""

    result: str
    reason: str = ""
    wait: float = 0.0


DELIVERED = Outcome("delivered")
