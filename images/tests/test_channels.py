"""The one-box channel (:class:`images.live.channels.LocalChannel`) under load, on real sockets.

A listener's queue is bounded (for datagrams, ``net.unix.max_dgram_qlen``:
10 by default; for its connections, their send buffers): these tests
publish far more than that to a listener that is slow, or not reading at
all, and check what arrives.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from images.live.channels import LocalChannel


class Recorder:
    """A listener (images.live.channels.Listener) that reads slowly, or not at all until let go."""

    def __init__(self, *, pause: float = 0.0) -> None:
        self.pause = pause
        self.received: list[bytes] = []
        self.gaps: list[int] = []  # how many events had arrived at each gap
        self.heard = threading.Event()
        self.reading = threading.Event()
        self.reading.set()
        self.stop = threading.Event()
        self.changed = threading.Condition()

    def listening(self) -> None:
        self.heard.set()

    def pace(self) -> None:
        pass  # reads as soon as the channel has something

    def deliver(self, payloads: list[bytes]) -> None:
        self.reading.wait()
        self.stop.wait(self.pause)
        with self.changed:
            self.received.extend(payloads)
            self.changed.notify_all()

    def gap(self) -> None:
        with self.changed:
            self.gaps.append(len(self.received))
            self.changed.notify_all()

    def idle(self) -> bool:
        return self.stop.is_set()

    def wait_for(self, count: int = 0, *, last: bytes = b"", timeout: float = 30.0) -> list[bytes]:
        """What was received once there are ``count`` (or ``last`` came), or at the timeout."""
        with self.changed:
            self.changed.wait_for(
                lambda: len(self.received) >= count and (not last or last in self.received),
                timeout,
            )
            return list(self.received)


@pytest.fixture
def listening(tmp_path: Path):
    channel = LocalChannel(tmp_path / "events")
    recorders: list[tuple[Recorder, threading.Thread]] = []

    def start(recorder: Recorder) -> LocalChannel:
        thread = threading.Thread(target=channel.listen, args=(recorder,), daemon=True)
        thread.start()
        assert recorder.heard.wait(5)
        recorders.append((recorder, thread))
        return channel

    yield start
    for recorder, thread in recorders:
        recorder.stop.set()
        recorder.reading.set()
        thread.join(5)
        assert not thread.is_alive()


def test_a_burst_far_past_the_queue_reaches_a_slow_listener_whole(listening):
    recorder = Recorder(pause=0.002)  # busy: 2 ms for each batch it is handed
    channel = listening(recorder)
    sent = [f"event {thread}-{number}".encode() for thread in range(4) for number in range(1000)]

    def publish(payloads: list[bytes]) -> None:
        for payload in payloads:
            channel.publish(payload)

    publishers = [
        threading.Thread(target=publish, args=(sent[n * 1000 : (n + 1) * 1000],)) for n in range(4)
    ]
    for publisher in publishers:
        publisher.start()
    for publisher in publishers:
        publisher.join(30)

    received = recorder.wait_for(len(sent))
    assert sorted(received) == sorted(sent)
    assert recorder.gaps == []
    # Each publisher's own events arrive in the order it sent them.
    for thread in range(4):
        mine = [p for p in received if p.startswith(f"event {thread}-".encode())]
        assert mine == [f"event {thread}-{number}".encode() for number in range(1000)]


def test_a_listener_that_stops_reading_is_told_of_the_gap_when_it_reads_again(listening):
    recorder = Recorder()
    channel = listening(recorder)
    channel.publish(b"before")
    assert recorder.wait_for(1) == [b"before"]

    recorder.reading.clear()  # hung: its thread is stuck in deliver
    # Its connection's buffer takes some; then one send waits its timeout and gives up,
    # and the rest are not waited for.
    for number in range(2000):
        channel.publish(f"while hung {number}".encode())
    recorder.reading.set()
    # Events published while it catches up may be dropped too (it is not
    # waited for again at once); the first one it gets comes after the gap.
    for number in range(100):
        channel.publish(f"after {number}".encode())
        received = recorder.wait_for(last=f"after {number}".encode(), timeout=0.1)
        if received[-1].startswith(b"after"):
            break
    assert received[-1].startswith(b"after")
    assert 1 < len(received) < 1 + 2000 + 1  # some were queued; not all of them
    # Told of the gap after what was queued, before what came once it read again.
    assert len(recorder.gaps) == 1
    assert received[recorder.gaps[0]].startswith(b"after")
    assert not any(p.startswith(b"after") for p in received[: recorder.gaps[0]])


def test_a_listener_whose_process_is_gone_is_forgotten(tmp_path: Path):
    channel = LocalChannel(tmp_path / "events")
    channel.directory.mkdir()
    orphan = channel.directory / "12345-deadbeef"
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    leftover.bind(str(orphan))
    leftover.listen()
    leftover.close()  # its file stays, nobody listens: as after a crash
    assert orphan.exists()

    channel.publish(b"event")
    assert not orphan.exists()
