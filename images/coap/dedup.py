"""Message deduplication (RFC 7252 §4.5) in bounded memory.

aiocoap 0.4 remembers every message it receives, with the answer it gave,
for EXCHANGE_LIFETIME (247 s), keeping the answer as the full response
object, which holds the request it answered (payload and all), and setting
one event-loop timer per message to forget it. Nothing caps either
(aiocoap issue #183, "limit deduplication memory", is open), so memory grows
with the message rate: measured here, a 600-upload run (6,000 block-wise
messages) added 33 MiB, and a flood of messages adds without limit.

This keeps the same duty, answering a retransmitted Confirmable message
with the answer already sent and processing it once, with:

- the answer kept as the datagram that went out (about 100 bytes for an
  acknowledgement), not as the response and request objects;
- no timer per message: entries expire in order as new ones arrive;
- at most :data:`PER_PEER` entries per peer and :data:`TOTAL` in all, the
  oldest out first. RFC 7252 §4.5 allows relaxing deduplication for
  requests handled idempotently, which ours are: an upload is keyed by
  device and timestamp (the same one again changes nothing), a block of a
  transfer is stored by its number, and reads change nothing. A peer
  retransmits within MAX_TRANSMIT_SPAN (45 s), long before it could send
  :data:`PER_PEER` newer messages at the rates we admit.

It is installed on aiocoap's message manager by subclassing it
(:func:`install`): aiocoap offers no hook, and the two methods replaced are
its private ``_deduplicate_message`` and ``_store_response_for_duplicates``
(pinned aiocoap 0.4.17; ``images/tests/test_coap_dedup.py`` checks the
behaviour against the real library).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from aiocoap import CON, Context
from aiocoap.messagemanager import MessageManager

PER_PEER = 512
TOTAL = 8192


class _Sent:
    """An answer as it went on the wire: what re-sending it needs, and no more."""

    __slots__ = ("_datagram", "mid", "mtype", "remote")

    def __init__(self, message: Any) -> None:
        self._datagram = message.encode()
        self.mid = message.mid
        self.mtype = message.mtype
        self.remote = message.remote

    def encode(self) -> bytes:
        return self._datagram


class BoundedMessageManager(MessageManager):
    """aiocoap's message manager with the deduplication record of this module."""

    _recent: OrderedDict[tuple[Any, int], tuple[float, _Sent | None]]
    _per_peer: dict[Any, int]

    def _deduplicate_message(self, message: Any) -> bool:
        key = (message.remote, message.mid)
        now = self.loop.time()
        self._expire(now - message.transport_tuning.EXCHANGE_LIFETIME)
        if key in self._recent:
            answer = self._recent[key][1]
            if message.mtype is CON and answer is not None:
                self.log.info("Duplicate CON received, sending the same answer again")
                self._send_via_transport(answer)
            return True
        self._remember(key, now)
        return False

    def _store_response_for_duplicates(self, message: Any) -> None:
        key = (message.remote, message.mid)
        if key in self._recent:
            self._recent[key] = (self._recent[key][0], _Sent(message))

    def _remember(self, key: tuple[Any, int], now: float) -> None:
        peer = key[0]
        if self._per_peer.get(peer, 0) >= PER_PEER:
            oldest = next(k for k in self._recent if k[0] == peer)
            self._forget(oldest)
        while len(self._recent) >= TOTAL:
            self._forget(next(iter(self._recent)))
        self._recent[key] = (now, None)
        self._per_peer[peer] = self._per_peer.get(peer, 0) + 1

    def _expire(self, before: float) -> None:
        while self._recent:
            key, (received, _) = next(iter(self._recent.items()))
            if received >= before:
                return
            self._forget(key)

    def _forget(self, key: tuple[Any, int]) -> None:
        del self._recent[key]
        peer = key[0]
        left = self._per_peer[peer] - 1
        if left:
            self._per_peer[peer] = left
        else:
            del self._per_peer[peer]

    def entries(self) -> int:
        return len(self._recent)


def install(context: Context) -> list[BoundedMessageManager]:
    """Give each of the context's message managers the bounded record (before traffic)."""
    installed = []
    for interface in context.request_interfaces:
        manager = getattr(interface, "token_interface", None)
        if isinstance(manager, MessageManager):
            manager.__class__ = BoundedMessageManager
            manager._recent = OrderedDict()
            manager._per_peer = {}
            manager._recent_messages.clear()  # aiocoap's own record, no longer used
            installed.append(manager)
    return installed
