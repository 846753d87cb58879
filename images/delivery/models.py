"""What deliveries keep in the database: the outbox, and who receives from it.

An :class:`OutboxEvent` is written in the transaction that stores (or
deletes) its image, so an event exists exactly when its change committed;
each :class:`Receiver` reads the outbox in order from its own ``cursor``.
A restart therefore loses nothing, and a receiver that is down only holds
its own cursor back (the transactional outbox pattern).
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

IMAGE = "image"
DELETED = "deleted"

WEBHOOK = "webhook"
MQTT = "mqtt"


class OutboxEvent(models.Model):
    """One image stored or deleted, as receivers are told of it."""

    seq = models.BigAutoField(primary_key=True)
    kind = models.CharField(max_length=10)
    device_id = models.CharField(max_length=100)
    image_id = models.UUIDField()
    # The image's timestamp (ISO 8601, as in its metadata): which is a device's latest.
    timestamp = models.CharField(max_length=40)
    # The JSON body sent: for an image stored, its metadata exactly as the
    # event stream's ``data``; for one deleted, its id, device and timestamp.
    payload = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            # A receiver of one device (or one prefix) reads its events in order.
            models.Index(fields=["device_id", "seq"], name="images_outbox_device_seq"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.image_id} (#{self.seq})"


class Receiver(models.Model):
    """A webhook (``manage.py webhook add``) or the MQTT broker (``IMAGES_MQTT``)."""

    kind = models.CharField(max_length=10, default=WEBHOOK)
    # A webhook's URL; the broker's URL without its password.
    url = models.CharField(max_length=2000)
    # Whose events: a device id, a prefix ending in "*", or "" for every device.
    device = models.CharField(max_length=101, blank=True, default="")
    # HMAC-SHA256 key of the Images-Signature header ("" for MQTT).
    secret = models.CharField(max_length=200, blank=True, default="")
    # The outbox seq of the last event done (delivered, refused or given up).
    cursor = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    # While deliveries fail: since when, how many attempts in a row, the
    # last error, and when the next attempt is due (exponential backoff).
    failing_since = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=200, blank=True, default="")
    retry_at = models.DateTimeField(null=True, blank=True)
    # A delivery worker's claim (any process of any instance): one at a time
    # per receiver keeps its events in order.
    lease_until = models.DateTimeField(null=True, blank=True)
    lease_holder = models.CharField(max_length=100, blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["kind", "url", "device"], name="images_receiver_unique")
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.url}" + (f" ({self.device})" if self.device else "")
