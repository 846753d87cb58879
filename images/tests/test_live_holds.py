"""Each client's open streams, counted across processes (images/live/holds.py, API.md §15).

``serve``'s processes count in one directory with ``flock``; a lock taken
through another open file description conflicts even within one process,
so one process stands for several here. A killed process's count goes with
its file descriptors: closing them is what its death does.
"""

from __future__ import annotations

import os

import pytest

from images.live import holds


@pytest.fixture(params=["directory", "process"])
def counting(request, settings, tmp_path):
    settings.IMAGES_EVENTS_HOLDS_DIR = str(tmp_path) if request.param == "directory" else ""
    return tmp_path


def test_a_client_holds_at_most_most_and_a_release_lets_one_more_in(counting):
    first = holds.take(("client 10.0.0.1",), 2)
    second = holds.take(("client 10.0.0.1",), 2)
    assert first is not None
    assert second is not None
    assert holds.take(("client 10.0.0.1",), 2) is None
    assert holds.take(("client 10.0.0.2",), 2) is not None  # another client
    first.release()
    first.release()  # idempotent
    again = holds.take(("client 10.0.0.1",), 2)
    assert again is not None
    assert holds.take(("client 10.0.0.1",), 2) is None


def test_every_key_must_have_room_and_a_refusal_keeps_nothing(counting):
    token = holds.take(("client a", "token 7"), 1)
    assert token is not None
    # The token is full: refused, and the other client's slot is not kept.
    assert holds.take(("client b", "token 7"), 1) is None
    assert holds.take(("client b",), 1) is not None


def test_the_directory_holds_only_the_streams_open(settings, tmp_path):
    settings.IMAGES_EVENTS_HOLDS_DIR = str(tmp_path)
    held = [holds.take(("client 10.0.0.1", "token 1"), 5) for _ in range(3)]
    assert len(os.listdir(tmp_path)) == 6
    for one in held:
        assert one is not None
        one.release()
    assert os.listdir(tmp_path) == []


def test_a_dead_holders_count_goes_with_its_descriptors(settings, tmp_path):
    settings.IMAGES_EVENTS_HOLDS_DIR = str(tmp_path)
    held = holds.take(("client 10.0.0.1",), 1)
    assert held is not None
    assert holds.take(("client 10.0.0.1",), 1) is None
    for _, fd in held._locks:  # as a killed process's are: closed, the file left behind
        os.close(fd)
    held._locks = []
    assert holds.take(("client 10.0.0.1",), 1) is not None
