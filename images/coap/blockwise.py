"""Block-wise transfers (RFC 7959) with bounded memory.

aiocoap reassembles Block1 uploads itself (``Block1Spool``), but keeps every
partial upload for MAX_TRANSMIT_WAIT with no cap on their number or size, and
caches every Block2 answer per client the same way. A client that starts
uploads and abandons them (or spoofs many source addresses) could exhaust the
server's memory, so the resources here do both directions themselves:

- :class:`Block1Assembler` holds at most ``max_transfers`` partial uploads
  and ``max_buffered_bytes`` in all; a new upload evicts the least recently
  active one when full, and uploads idle for MAX_TRANSMIT_WAIT are dropped.
- :func:`block2_slice` cuts one block out of a complete answer, and
  :class:`images.storage.cache.BlobCache` keeps recently served images by their
  sha256 (shared by all clients, bounded in bytes) so that a Block2 download
  does not read the whole image from the database for every block.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from aiocoap import error
from aiocoap.optiontypes import BlockOption

from images.errors import ImageTooLarge

BlockwiseTuple = BlockOption.BlockwiseTuple

# RFC 7252 §4.8.2: a sender stops retransmitting a message after
# MAX_TRANSMIT_WAIT (93 s); a transfer with no new block by then is abandoned.
IDLE_TIMEOUT = 93.0
MAX_TRANSFERS = 64
MAX_BUFFERED_BYTES = 256 * 1024 * 1024
# RFC 7959 §2.2: SZX 7 is reserved; BERT (RFC 8323 §6) gives it a meaning on
# reliable transports only, and this endpoint is UDP.
MAX_SZX = 6


def too_large(size: int, limit: int) -> ImageTooLarge:
    """The 4.13 for a body of ``size`` bytes; CoAP sends ``limit`` back as Size1."""
    return ImageTooLarge(
        f"request body of {size} bytes exceeds the limit of {limit}", field="detail", limit=limit
    )


@dataclass
class _Transfer:
    body: bytearray
    limit: int
    last_active: float


class Block1Assembler:
    """Reassembles Block1 request bodies (RFC 7959 §2.5), within fixed bounds.

    Transfers are keyed by the caller: the client endpoint plus the options
    that identify the request (all but the block options; libcoap adds a
    Request-Tag, RFC 9175, which thus tells its transfers apart too).
    Memory held is at most ``max_buffered_bytes`` plus one block, whatever
    clients do.
    """

    def __init__(
        self,
        *,
        max_transfers: int = MAX_TRANSFERS,
        max_buffered_bytes: int = MAX_BUFFERED_BYTES,
        idle_timeout: float = IDLE_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_transfers = max_transfers
        self._max_buffered_bytes = max_buffered_bytes
        self._idle_timeout = idle_timeout
        self._clock = clock
        # Least recently active first: the order in which transfers are evicted.
        self._transfers: OrderedDict[Hashable, _Transfer] = OrderedDict()
        self._buffered = 0

    @property
    def transfers(self) -> int:
        """How many partial uploads are held."""
        return len(self._transfers)

    @property
    def buffered_bytes(self) -> int:
        """How many body bytes the partial uploads hold in all."""
        return self._buffered

    def feed(
        self,
        key: Hashable,
        block: BlockwiseTuple,
        payload: bytes,
        *,
        limit: int,
        size1: int | None = None,
    ) -> bytes | None:
        """Add one block of the body sent under ``key``.

        Returns the whole body with the last block (M=0) and ``None`` while
        more are to come (the caller answers 2.31 Continue). Raises
        :class:`ImageTooLarge` (limit set) as soon as the body, or the Size1
        the client announced with its first block (RFC 7959 §4), exceeds
        ``limit``; ``aiocoap.error.BadRequest`` for a block whose size
        contradicts its SZX; ``aiocoap.error.RequestEntityIncomplete`` for a
        block that does not continue a transfer held here.
        """
        now = self._clock()
        self._expire(now)
        if block.size_exponent > MAX_SZX:
            raise error.BadRequest("Block1 SZX 7 (BERT) is not defined over UDP")
        # RFC 7959 §2.2: every block but the last carries exactly its block size.
        if len(payload) > block.size or (block.more and len(payload) != block.size):
            raise error.BadRequest(
                f"a Block1 block of SZX {block.size_exponent} must be {block.size} bytes"
            )
        limit = min(limit, self._max_buffered_bytes)
        if block.block_number == 0:
            # A first block (re)starts the transfer: the client gave up on an earlier one.
            self._drop(key)
            if size1 is not None and size1 > limit:
                raise too_large(size1, limit)
            while len(self._transfers) >= self._max_transfers:
                self._drop(next(iter(self._transfers)))
            transfer = self._transfers[key] = _Transfer(bytearray(), limit, now)
        else:
            held = self._transfers.get(key)
            # Blocks are taken in order only (a client sends the next one
            # after the 2.31 for the last); anything else cannot be
            # assembled and the client must start over (4.08, RFC 7959 §2.9.2).
            if held is None or block.start != len(held.body):
                self._drop(key)
                raise error.RequestEntityIncomplete(
                    f"block {block.block_number} does not continue an upload in progress; "
                    "start again at block 0"
                )
            transfer = held
            self._transfers.move_to_end(key)
        size = len(transfer.body) + len(payload)
        if size > transfer.limit:
            self._drop(key)
            raise too_large(size, transfer.limit)
        self._make_room(len(payload), keep=key)
        transfer.body += payload
        transfer.last_active = now
        self._buffered += len(payload)
        if block.more:
            return None
        self._drop(key)
        return bytes(transfer.body)

    def _make_room(self, needed: int, *, keep: Hashable) -> None:
        # The kept transfer alone always fits: its limit is capped to the budget.
        while self._buffered + needed > self._max_buffered_bytes:
            stalest = next(iter(self._transfers))
            if stalest == keep:
                break
            self._drop(stalest)

    def _expire(self, now: float) -> None:
        while self._transfers:
            key, transfer = next(iter(self._transfers.items()))
            if now - transfer.last_active < self._idle_timeout:
                return
            self._drop(key)

    def _drop(self, key: Hashable) -> None:
        transfer = self._transfers.pop(key, None)
        if transfer is not None:
            self._buffered -= len(transfer.body)


def block2_slice(
    payload: bytes, requested: BlockwiseTuple | None, *, max_szx: int, max_payload: int
) -> tuple[bytes, BlockwiseTuple | None]:
    """The part of a complete GET answer to send, and its Block2 option.

    ``requested`` is the request's Block2 option, if any. Without one, a
    payload of at most ``max_payload`` bytes goes whole (no option); a larger
    one is cut into blocks of ``max_szx`` (RFC 7959 §2.4, the server picks the
    size). A requested size larger than ``max_szx`` is reduced, keeping the
    byte offset the client asked for. A block past the end raises
    ``aiocoap.error.BadOption``.
    """
    if requested is None:
        if len(payload) <= max_payload:
            return payload, None
        requested = BlockwiseTuple(0, False, max_szx)
    # reduced_to can hand back a plain tuple (for SZX 7), hence the rewrap.
    block = BlockwiseTuple(*requested.reduced_to(min(max_szx, MAX_SZX)))
    start = block.start
    if start >= len(payload) and start > 0:
        raise error.BadOption(f"Block2 block {requested.block_number} is past the end")
    end = start + block.size
    return payload[start:end], BlockwiseTuple(
        block.block_number, end < len(payload), block.size_exponent
    )
