"""mozjpeg's long-lived child processes: reused, replaced when they die, shared by threads, forks.

Every child here is a real one, and every way it dies is a real death: the
exit() mozjpeg calls on a corrupt file, SIGKILL, the deadline.
"""

from __future__ import annotations

import os
import select
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from images.compression import compress, mozjpeg, pixels_equal
from images.tests.conftest_compression import encode, jpeg_with_oversized_coefficients, pattern


def photo_jpeg(seed: int, size: tuple[int, int] = (256, 192)) -> bytes:
    return encode(pattern("RGB", size, seed=seed), "JPEG", quality=90)


def gone(pid: int) -> bool:
    """True once ``pid`` has been reaped (its /proc entry is gone)."""
    return not Path(f"/proc/{pid}").exists()


def wait_until_dead(pid: int) -> None:
    """Until ``pid`` has exited (a zombie waiting for its parent, or reaped)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} is still running")


def test_one_child_serves_image_after_image() -> None:
    assert compress(photo_jpeg(1)).method == "mozjpeg"
    children = mozjpeg.child_pids()
    assert children
    assert compress(photo_jpeg(2)).method == "mozjpeg"
    assert mozjpeg.child_pids() == children  # no child started, none lost


def test_a_jpeg_that_makes_mozjpeg_exit_ends_only_that_child() -> None:
    compress(photo_jpeg(3))  # a child is up and idle
    before = set(mozjpeg.child_pids())
    data = jpeg_with_oversized_coefficients()
    result = compress(data)  # the child calls exit(); this process carries on
    assert (result.data, result.method) == (data, "original")
    (ended,) = before - set(mozjpeg.child_pids())
    assert gone(ended)  # reaped, not left a zombie
    following = photo_jpeg(4)
    result = compress(following)
    assert result.method == "mozjpeg"
    assert pixels_equal(following, result.data)


def test_a_child_killed_while_idle_is_replaced() -> None:
    compress(photo_jpeg(5))
    killed = mozjpeg.child_pids()[-1]  # the one the next image would take
    os.kill(killed, signal.SIGKILL)
    wait_until_dead(killed)
    data = photo_jpeg(6)
    result = compress(data)
    assert result.method == "mozjpeg"
    assert pixels_equal(data, result.data)
    assert killed not in mozjpeg.child_pids()
    assert gone(killed)


def test_a_child_past_the_deadline_is_killed_and_the_next_image_gets_a_new_one() -> None:
    mozjpeg.optimize(photo_jpeg(7))
    busy = mozjpeg.child_pids()[-1]
    large = encode(pattern("RGB", (1024, 768), seed=8), "JPEG", quality=95)
    assert mozjpeg.optimize(large, timeout=0.001) is None
    assert gone(busy)
    optimized = mozjpeg.optimize(large)
    assert optimized is not None
    assert pixels_equal(large, optimized)


def test_threads_optimize_at_the_same_time() -> None:
    images = [photo_jpeg(seed) for seed in range(10, 18)]
    one_by_one = [mozjpeg.optimize(data) for data in images]
    with ThreadPoolExecutor(len(images)) as pool:
        at_once = list(pool.map(mozjpeg.optimize, images))
        results = list(pool.map(compress, images))
    assert at_once == one_by_one
    assert all(at_once)
    assert all(result.method == "mozjpeg" for result in results)
    assert all(pixels_equal(a, b.data) for a, b in zip(images, results, strict=True))
    assert len(mozjpeg.child_pids()) <= (os.cpu_count() or 1)


# The fork is the point. Under pytest-xdist the worker also runs execnet's
# threads, which Python 3.12 warns about; they hold nothing the child takes
# (it only optimizes), and a child that hung anyway fails the test below
# instead of hanging the run.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_process_starts_children_of_its_own() -> None:
    data = photo_jpeg(20)
    expected = mozjpeg.optimize(data)
    parents = mozjpeg.child_pids()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the forked process: report, and never return into pytest
        try:
            own = mozjpeg.optimize(data) == expected
            os.write(write, b"1" if own and not set(mozjpeg.child_pids()) & set(parents) else b"0")
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as answer:
        ready, _, _ = select.select([answer], [], [], 60)
        if not ready:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        assert ready, "the forked process did not answer within 60 s"
        assert answer.read() == b"1"
    assert mozjpeg.child_pids() == parents  # the parent's children were left alone
    assert mozjpeg.optimize(data) == expected
