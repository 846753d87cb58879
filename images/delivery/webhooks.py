"""Webhooks: who receives (``manage.py webhook``), and one signed ``POST`` of an event.

A receiver verifies a delivery by computing HMAC-SHA256 of the raw body with
its secret and comparing it with ``Images-Signature`` (docs/integrations.md
shows the few lines). ``Images-Delivery`` is the same on every attempt of
one event to one receiver, so a receiver can drop a repeat.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import secrets
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.db import IntegrityError, transaction

from images.delivery import outbox
from images.delivery.models import WEBHOOK, Receiver
from images.delivery.outbox import Event
from images.lifecycle.policies import pattern_check

USER_AGENT = "images-webhook/1"

# The answers worth another attempt (RFC 9110: the request may succeed
# later); every other 4xx says this event will never be accepted.
_RETRIED_STATUSES = frozenset({408, 425, 429})


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


class Poster:
    """One receiver's kept-alive connection, and one signed ``POST`` per event.

    The standard library's ``http.client``, not urllib3's pool: one
    connection to one host is all a receiver needs, and measured
    (bench/deliveries.py) a POST cost 250 µs of CPU through
    ``PoolManager.request`` against about 30 µs here, for every event to
    every receiver.
    """

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        parts = urlsplit(receiver.url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._headers = {
            "Host": parts.netloc,
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        }
        self._connection: http.client.HTTPConnection | None = None

    def post(self, event: Event) -> Outcome:
        """One attempt to deliver ``event``."""
        body = event.payload.encode()
        headers = {
            **self._headers,
            "Images-Event": event.kind,
            "Images-Delivery": f"{self.receiver.pk}-{event.seq}",
            "Images-Signature": signature(self.receiver.secret, body),
        }
        try:
            connection = self._connected()
            connection.request("POST", self._target, body=body, headers=headers)
            response = connection.getresponse()
            # Read (a little of) the answer so the connection can be kept.
            response.read(64 * 1024)
            if response.will_close or not response.isclosed():
                self.close()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            return Outcome("retry", _short(f"{type(exc).__name__}: {exc}"))
        status = response.status
        if 200 <= status < 300:
            return DELIVERED
        reason = f"HTTP {status}"
        if status >= 500 or status in _RETRIED_STATUSES:
            return Outcome("retry", reason, _retry_after(response.getheader("Retry-After")))
        return Outcome("refused", reason)

    def _connected(self) -> http.client.HTTPConnection:
        if self._connection is None:
            timeout = settings.IMAGES_WEBHOOK_TIMEOUT
            if self._https:
                self._connection = http.client.HTTPSConnection(
                    self._host, self._port, timeout=timeout, context=ssl.create_default_context()
                )
            else:
                self._connection = http.client.HTTPConnection(
                    self._host, self._port, timeout=timeout
                )
        return self._connection

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


def _retry_after(value: str | None) -> float:
    # Seconds only: a date is rare from a webhook receiver, and the backoff covers it.
    if value and value.strip().isdigit():
        return min(float(value.strip()), 3600.0)
    return 0.0


def _short(text: str) -> str:
    return text if len(text) <= 200 else text[:197] + "..."
