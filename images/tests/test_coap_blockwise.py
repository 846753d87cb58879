"""images.coap.blockwise: bounded Block1 reassembly, Block2 slicing, the image cache."""

from __future__ import annotations

import pytest
from aiocoap import error

from images.coap.blockwise import Block1Assembler, BlockwiseTuple, block2_slice
from images.errors import ImageTooLarge
from images.storage.cache import BlobCache


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def blocks(body: bytes, szx: int = 6) -> list[tuple[BlockwiseTuple, bytes]]:
    size = 2 ** (szx + 4)
    chunks = [body[start : start + size] for start in range(0, len(body), size)]
    return [
        (BlockwiseTuple(number, number < len(chunks) - 1, szx), chunk)
        for number, chunk in enumerate(chunks)
    ]


def send(assembler: Block1Assembler, key: str, body: bytes, *, limit: int = 10_000) -> bytes | None:
    result = None
    for block, chunk in blocks(body):
        result = assembler.feed(key, block, chunk, limit=limit)
    return result


def test_it_reassembles_a_body_and_answers_none_until_the_last_block():
    assembler = Block1Assembler()
    body = bytes(range(256)) * 9
    answers = [assembler.feed("k", block, chunk, limit=10_000) for block, chunk in blocks(body)]
    assert answers[:-1] == [None, None]
    assert answers[-1] == body
    assert (assembler.transfers, assembler.buffered_bytes) == (0, 0)


def test_it_keeps_transfers_of_different_keys_apart():
    assembler = Block1Assembler()
    first, second = blocks(b"a" * 2048), blocks(b"b" * 2048)
    assembler.feed("one", *first[0], limit=10_000)
    assembler.feed("two", *second[0], limit=10_000)
    assert assembler.feed("one", *first[1], limit=10_000) == b"a" * 2048
    assert assembler.feed("two", *second[1], limit=10_000) == b"b" * 2048


def test_it_answers_4_13_with_size1_when_the_announced_size1_exceeds_the_limit():
    assembler = Block1Assembler()
    with pytest.raises(ImageTooLarge) as raised:
        assembler.feed("k", BlockwiseTuple(0, True, 6), bytes(1024), limit=5000, size1=5001)
    assert raised.value.limit == 5000
    assert assembler.transfers == 0


def test_it_answers_4_13_with_size1_when_the_first_block_already_exceeds_the_limit():
    with pytest.raises(ImageTooLarge) as raised:
        Block1Assembler().feed("k", BlockwiseTuple(0, True, 6), bytes(1024), limit=100)
    assert raised.value.limit == 100


def test_it_answers_4_13_with_size1_when_blocks_grow_past_the_limit_and_forgets_the_upload():
    assembler = Block1Assembler()
    with pytest.raises(ImageTooLarge) as raised:
        send(assembler, "k", bytes(5000), limit=3000)
    assert raised.value.limit == 3000
    assert (assembler.transfers, assembler.buffered_bytes) == (0, 0)


def test_a_block_that_does_not_continue_a_transfer_is_4_08():
    assembler = Block1Assembler()
    with pytest.raises(error.RequestEntityIncomplete):
        assembler.feed("k", BlockwiseTuple(1, True, 6), bytes(1024), limit=10_000)
    assembler.feed("k", BlockwiseTuple(0, True, 6), bytes(1024), limit=10_000)
    with pytest.raises(error.RequestEntityIncomplete):
        assembler.feed("k", BlockwiseTuple(2, True, 6), bytes(1024), limit=10_000)
    assert assembler.transfers == 0


def test_a_client_may_switch_to_smaller_blocks_mid_transfer():
    assembler = Block1Assembler()
    assembler.feed("k", BlockwiseTuple(0, True, 6), b"a" * 1024, limit=10_000)
    # Block 4 of 256 bytes starts at byte 1024 (RFC 7959 §2.3).
    assert assembler.feed("k", BlockwiseTuple(4, False, 4), b"b" * 256, limit=10_000) == (
        b"a" * 1024 + b"b" * 256
    )


@pytest.mark.parametrize(
    ("block", "size"),
    [
        (BlockwiseTuple(0, True, 6), 1000),
        (BlockwiseTuple(0, False, 4), 257),
        (BlockwiseTuple(0, True, 7), 1024),
    ],
)
def test_a_block_whose_size_contradicts_its_szx_is_4_00(block, size):
    with pytest.raises(error.BadRequest):
        Block1Assembler().feed("k", block, bytes(size), limit=10_000)


def test_a_new_first_block_restarts_the_transfer():
    assembler = Block1Assembler()
    assembler.feed("k", BlockwiseTuple(0, True, 6), b"a" * 1024, limit=10_000)
    assert send(assembler, "k", b"b" * 1500) == b"b" * 1500


def test_abandoned_uploads_are_capped_in_number_and_the_stalest_is_evicted():
    assembler = Block1Assembler(max_transfers=3)
    for key in range(1000):
        assembler.feed(key, BlockwiseTuple(0, True, 6), bytes(1024), limit=10_000)
    assert (assembler.transfers, assembler.buffered_bytes) == (3, 3 * 1024)
    with pytest.raises(error.RequestEntityIncomplete):
        assembler.feed(0, BlockwiseTuple(1, True, 6), bytes(1024), limit=10_000)
    assembler.feed(999, BlockwiseTuple(1, False, 6), b"", limit=10_000)


def test_abandoned_uploads_are_capped_in_bytes_without_evicting_the_growing_one():
    assembler = Block1Assembler(max_buffered_bytes=4096)
    for key in range(3):
        assembler.feed(key, BlockwiseTuple(0, True, 6), bytes(1024), limit=10_000)
    assert send(assembler, "big", bytes(4096)) == bytes(4096)
    assert assembler.buffered_bytes == 0


def test_the_byte_budget_also_limits_a_single_upload():
    with pytest.raises(ImageTooLarge) as raised:
        send(Block1Assembler(max_buffered_bytes=2048), "k", bytes(4096), limit=10_000)
    assert raised.value.limit == 2048


def test_uploads_idle_past_the_timeout_are_dropped():
    clock = Clock()
    assembler = Block1Assembler(idle_timeout=93.0, clock=clock)
    assembler.feed("old", BlockwiseTuple(0, True, 6), bytes(1024), limit=10_000)
    clock.now = 50.0
    assembler.feed("young", BlockwiseTuple(0, True, 6), bytes(1024), limit=10_000)
    clock.now = 100.0
    assembler.feed("new", BlockwiseTuple(0, True, 6), bytes(1024), limit=10_000)
    assert assembler.transfers == 2
    with pytest.raises(error.RequestEntityIncomplete):
        assembler.feed("old", BlockwiseTuple(1, True, 6), bytes(1024), limit=10_000)


def test_block2_leaves_a_payload_that_fits_one_message_whole():
    assert block2_slice(b"x" * 1024, None, max_szx=6, max_payload=1024) == (b"x" * 1024, None)


def test_block2_cuts_a_large_payload_into_blocks_of_the_largest_size():
    payload = bytes(range(256)) * 10
    first = block2_slice(payload, None, max_szx=6, max_payload=1024)
    assert first == (payload[:1024], BlockwiseTuple(0, True, 6))
    last = block2_slice(payload, BlockwiseTuple(2, False, 6), max_szx=6, max_payload=1024)
    assert last == (payload[2048:], BlockwiseTuple(2, False, 6))


def test_block2_serves_the_smaller_size_a_client_asks_for():
    payload = bytes(range(256)) * 10
    chunk, block = block2_slice(payload, BlockwiseTuple(3, False, 4), max_szx=6, max_payload=1024)
    assert (chunk, block) == (payload[768:1024], BlockwiseTuple(3, True, 4))


def test_block2_reduces_a_too_large_size_keeping_the_offset():
    payload = bytes(4096)
    _, block = block2_slice(payload, BlockwiseTuple(1, False, 7), max_szx=5, max_payload=512)
    assert block == BlockwiseTuple(2, True, 5)


def test_a_block2_past_the_end_is_4_02():
    with pytest.raises(error.BadOption):
        block2_slice(bytes(2048), BlockwiseTuple(2, False, 6), max_szx=6, max_payload=1024)


def test_the_blob_cache_keeps_the_most_recently_used_within_its_budget():
    cache = BlobCache(max_bytes=10)
    cache.put("a", b"aaaa")
    cache.put("b", b"bbbb")
    assert cache.get("a") == b"aaaa"
    cache.put("c", b"cccc")
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (b"aaaa", None, b"cccc")
    cache.put("huge", bytes(11))
    assert cache.get("huge") is None
