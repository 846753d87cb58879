"""The hub's fan-out and an asyncio watcher's keep-alive (images.live), in one process.

A fresh :class:`~images.live.Hub` is handed encoded events as a channel
hands them (``deliver``); its subscriptions are the real ones, waited on
from threads or from an event loop. No channel and no database: those are
covered, for real, by test_channels.py, test_events.py and test_live_serve.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from images import live
from images.live import REVOKED, Event, Hub, Subscription


@pytest.fixture
def hub() -> Iterator[Hub]:
    """A fresh hub; its watchers leave at the end, so its listener thread (and any
    LISTEN connection it opened on the suite's database) ends a moment later."""
    fresh = Hub()
    yield fresh
    for watchers in list(fresh._watchers.values()):
        for watcher in list(watchers):
            fresh.unsubscribe(watcher)


def image(device: str, number: int) -> Event:
    return Event(live.IMAGE, f"id-{device}-{number}", device, f"2026-12-05T00:00:0{number}Z", b"{}")


def received(subscription: Subscription) -> list[str]:
    """Every image id waiting, then how the subscription ended (if it did)."""
    ids: list[str] = []
    while True:
        try:
            taken = subscription.next_blocking(0)
        except live.Closed as closed:
            return [*ids, f"closed: {closed}"]
        if taken is None:
            return ids
        ids += [event.image_id for event in taken]


def test_each_watcher_gets_its_share_of_a_batch_in_order_and_a_revocation_ends_it(hub):
    camera = hub.subscribe(Subscription(device_id="cam"))
    other = hub.subscribe(Subscription(device_id="other"))
    everything = hub.subscribe(Subscription(device_id=None))
    revoked = hub.subscribe(Subscription(device_id=None, token_id=7))
    kept = hub.subscribe(Subscription(device_id="cam", token_id=8))
    batch = [
        image("cam", 1),
        image("other", 1),
        image("cam", 2),
        Event(REVOKED, token_ids=(7, 9)),
        image("cam", 3),
        image("nobody", 1),
    ]
    hub.deliver([event.encode() for event in batch] + [b"not an event"])
    assert received(camera) == ["id-cam-1", "id-cam-2", "id-cam-3"]
    assert received(kept) == ["id-cam-1", "id-cam-2", "id-cam-3"]
    assert received(other) == ["id-other-1"]
    assert received(everything) == [
        "id-cam-1",
        "id-other-1",
        "id-cam-2",
        "id-cam-3",
        "id-nobody-1",
    ]
    # What came before the revocation, then the end: nothing after it.
    assert received(revoked) == ["id-cam-1", "id-other-1", "id-cam-2", "closed: revoked"]


def test_a_watcher_that_falls_too_far_behind_is_closed(hub):
    slow = hub.subscribe(Subscription(device_id="cam"))
    for start in range(0, live.QUEUE_LIMIT + 1, 100):
        hub.deliver([image("cam", n).encode() for n in range(start, start + 100)])
    with pytest.raises(live.Closed, match="behind"):
        slow.next_blocking(0)


def test_an_asyncio_watcher_is_handed_its_events_on_its_own_loop():
    async def scenario() -> list[str]:
        hub = Hub()
        subscription = hub.subscribe(Subscription(device_id="cam", loop=asyncio.get_running_loop()))
        # As the channel's thread does.
        await asyncio.to_thread(hub.deliver, [image("cam", n).encode() for n in (1, 2)])
        taken = await subscription.next(30)
        assert taken is not None
        hub.unsubscribe(subscription)
        return [event.image_id for event in taken]

    assert asyncio.run(scenario()) == ["id-cam-1", "id-cam-2"]


def test_an_asyncio_watcher_hears_silence_only_after_a_quiet_spell():
    """``next`` answers ``None`` (a keep-alive is due) only once nothing came for ``timeout``."""

    async def scenario() -> tuple[list[str], list[str]]:
        loop = asyncio.get_running_loop()
        subscription = Subscription(device_id="cam", loop=loop)
        # An event every 70 ms for 1.5 s: longer than the quiet spell (1 s), never quiet.
        for n in range(22):
            loop.call_later(0.07 * (n + 1), subscription.put, [image("cam", n)])
        before_quiet: list[str] = []
        while (taken := await subscription.next(1.0)) is not None:
            before_quiet += [event.image_id for event in taken]
        # Quiet again: the next answer is another keep-alive, then an event ends the wait.
        answers = ["quiet" if await subscription.next(1.0) is None else "events"]
        loop.call_later(0.05, subscription.put, [image("cam", 99)])
        answers.append("quiet" if await subscription.next(1.0) is None else "events")
        subscription.close("done")
        subscription.stop_timer()
        return before_quiet, answers

    before_quiet, answers = asyncio.run(scenario())
    assert before_quiet == [f"id-cam-{n}" for n in range(22)]
    assert answers == ["quiet", "events"]
