"""A local MQTT broker: Debian's Mosquitto on a free port, for tests and bench.

The service publishes to whatever broker ``IMAGES_MQTT`` names; this only
starts one of its own beside it (``scripts/test`` installs ``mosquitto``),
anonymous, on 127.0.0.1, its configuration and log in a directory of the
caller's. ``persistent=True`` keeps subscriber sessions and queued messages
across a restart of the broker, as an installation's broker would.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Mosquitto:
    """A broker of its own on a free port (kept across :meth:`stop` and :meth:`start`)."""

    def __init__(self, directory: Path, *, persistent: bool = False, idle: bool = False) -> None:
        self.port = _free_port()
        self.directory = directory
        self.idle = idle  # run only on CPU nothing else wants (a bench's broker stands elsewhere)
        self.config = directory / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true"]
        if persistent:
            lines += ["persistence true", f"persistence_location {directory}/"]
        self.config.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> None:
        """Start the broker and wait until it takes connections."""
        with open(self.directory / "mosquitto.log", "ab") as log:
            self.process = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_idle if self.idle else None,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited with code {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"mosquitto did not listen on port {self.port} within {timeout} s")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


def _idle() -> None:
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
