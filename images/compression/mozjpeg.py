"""mozjpeg's lossless JPEG optimization, in child processes that serve one image after another.

mozjpeg-lossless-optimization (1.3.2) gives only its decoder a recoverable
error handler: an encoder error, such as "DCT coefficient out of range" from a
corrupt file that Pillow decodes happily, calls exit() and would end the whole
server process. So it runs in a child interpreter (``mozjpeg_child.py``; -P
keeps the working directory off its sys.path). When a child dies, hangs past
the timeout or answers out of turn, that image is stored as received, the
child is killed and reaped, and the next image gets a new one.

A child used to be started for every image. For ``sklearn__china.jpg``
(196 kB) that cost 68 ms of CPU: interpreter start-up with site-packages
and the import about 30 ms, mozjpeg itself 33 ms. A child now stays up, so
start-up is paid once per process (and again after a crash), and the image
costs 34 ms: mozjpeg plus the pipe copies (``bench/compress.py
--jpeg-child``; 41 ms for the whole ``compress()``, both decodes included).

Each child serves one thread at a time. Threads that optimize at once take
an idle child or start one, up to :data:`_POOL_SIZE` children; more wait.
"""

from __future__ import annotations

import atexit
import os
import selectors
import subprocess
import sys
import threading
import time
from pathlib import Path

_TIMEOUT_SECONDS = 60
_POOL_SIZE = min(4, os.cpu_count() or 1)  # one per core: mozjpeg is CPU-bound
_COMMAND = (sys.executable, "-P", str(Path(__file__).with_name("mozjpeg_child.py")))
_HEADER_BYTES = 8  # both ways: the big-endian length of the JPEG that follows
_PIPE_PIECE = 1 << 20


def optimize(data: bytes, *, timeout: float = _TIMEOUT_SECONDS) -> bytes | None:
    """mozjpeg's lossless optimization of ``data``, copying every marker; None if it fails.

    Never raises for bad input and never takes longer than about ``timeout``
    seconds (plus starting a child): a child that mozjpeg ends, or that is
    still busy at the deadline, costs only this image's optimization.
    """
    return _POOL.optimize(data, timeout)


def child_pids() -> list[int]:
    """Process ids of the idle children (the bench adds up their CPU time)."""
    return _POOL.idle_pids()


class _ChildFailed(Exception):
    """The child died, hung or broke the protocol: it cannot serve another image."""


class _Child:
    def __init__(self) -> None:
        self._process = subprocess.Popen(
            _COMMAND,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # mozjpeg's messages before an exit()
            bufsize=0,
        )
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._stdin, self._stdout = self._process.stdin, self._process.stdout
        # Non-blocking, so one deadline covers writing the request and reading
        # the answer, whichever the child stops at.
        os.set_blocking(self._stdin.fileno(), False)
        os.set_blocking(self._stdout.fileno(), False)

    @property
    def pid(self) -> int:
        return self._process.pid

    def alive(self) -> bool:
        return self._process.poll() is None

    def optimize(self, data: bytes, timeout: float) -> bytes:
        """The child's answer for ``data`` (b"" when mozjpeg refused it); raises _ChildFailed."""
        deadline = time.monotonic() + timeout
        outgoing = [memoryview(len(data).to_bytes(_HEADER_BYTES, "big")), memoryview(data)]
        # An answer is never allowed to be much larger than the request: a
        # desynchronised child must not make us read without end.
        most = 2 * len(data) + _PIPE_PIECE
        answer = bytearray()
        stdin, stdout = self._stdin.fileno(), self._stdout.fileno()
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(stdin, selectors.EVENT_WRITE)
                selector.register(stdout, selectors.EVENT_READ)
                while True:
                    length = _answer_length(answer, most)
                    if length is not None and len(answer) >= _HEADER_BYTES + length:
                        if len(answer) > _HEADER_BYTES + length:
                            raise _ChildFailed("answered more than it announced")
                        return bytes(memoryview(answer)[_HEADER_BYTES:])
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise _ChildFailed("timed out")
                    for key, _ in selector.select(remaining):
                        if key.fd == stdin:
                            sent = os.write(stdin, outgoing[0][:_PIPE_PIECE])
                            outgoing[0] = outgoing[0][sent:]
                            if not outgoing[0]:
                                outgoing.pop(0)
                            if not outgoing:
                                selector.unregister(stdin)
                        elif piece := os.read(stdout, _PIPE_PIECE):
                            answer += piece
                        else:
                            raise _ChildFailed("exited")  # mozjpeg called exit(), or a kill
        except OSError as exc:  # BrokenPipeError: it exited before reading everything
            raise _ChildFailed(str(exc)) from exc

    def close(self) -> None:
        """Kill the child (if it still runs), reap it and close its pipes."""
        self._process.kill()
        self._process.wait()
        self._stdin.close()
        self._stdout.close()

    def stop(self) -> None:
        """End an idle child the polite way: the end of its input ends its loop."""
        self._stdin.close()
        try:
            self._process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._stdout.close()

    def disown(self) -> None:
        """In a forked process: let go of the parent's child without touching it."""
        self._stdin.close()
        self._stdout.close()


def _answer_length(answer: bytearray, most: int) -> int | None:
    if len(answer) < _HEADER_BYTES:
        return None
    length = int.from_bytes(answer[:_HEADER_BYTES], "big")
    if length > most:
        raise _ChildFailed(f"announced an answer of {length:,} bytes")
    return length


class _Pool:
    def __init__(self, size: int) -> None:
        self._size = size
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self._size)
        self._idle: list[_Child] = []

    def optimize(self, data: bytes, timeout: float) -> bytes | None:
        with self._slots:
            try:
                child = self._take()
            except OSError:
                return None  # no child could be started (no memory, no processes left)
            answer = None
            try:
                answer = child.optimize(data, timeout)
            except _ChildFailed:
                pass
            finally:
                if answer is None:  # failed, or interrupted mid-request
                    child.close()
                else:
                    with self._lock:
                        self._idle.append(child)
        return answer or None

    def _take(self) -> _Child:
        with self._lock:
            while self._idle:
                child = self._idle.pop()
                if child.alive():
                    return child
                child.close()  # died while idle (the OOM killer, an operator): reap it
        return _Child()

    def idle_pids(self) -> list[int]:
        with self._lock:
            return [child.pid for child in self._idle]

    def stop(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for child in idle:
            child.stop()

    def forget_after_fork(self) -> None:
        # The children belong to the parent process; a forked worker starts
        # its own. Locks are made anew: another thread may have held them.
        for child in self._idle:
            child.disown()
        self._reset()


_POOL = _Pool(_POOL_SIZE)
atexit.register(_POOL.stop)
os.register_at_fork(after_in_child=_POOL.forget_after_fork)
