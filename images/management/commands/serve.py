"""``serve``: production HTTP (granian, several workers), CoAP and the optimizer together.

Granian was chosen by measurement (``bench/servers.py``, docs/performance.md):
on this 2-core machine it served the same app 1.3x to 1.8x faster than
gunicorn. Every server runs as a child process with ``DEBUG`` off; SIGTERM or
SIGINT is passed on to them, granian lets in-flight requests (uploads
included) finish, and ``serve`` exits when all have stopped.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

ROOT = Path(__file__).resolve().parents[3]
_RESTART_PAUSE_SECONDS = 5.0
# The stream listener's CPU priority below the HTTP workers' (nice 0): see _streams.
STREAMS_NICE = 5
# Event streams each HTTP worker sends on the API port, a thread each: see _http.
API_STREAMS = 64


class Command(BaseCommand):
    help = "Run the production HTTP server (granian, N workers) and the CoAP endpoint."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="0.0.0.0", help="HTTP bind address")
        parser.add_argument("--port", type=int, default=8000, help="HTTP port")
        parser.add_argument("--coap-host", default=settings.COAP_HOST, help="CoAP bind address")
        parser.add_argument(
            "--coap-port", type=int, default=settings.COAP_PORT, help="CoAP UDP port; 0: no CoAP"
        )
        parser.add_argument(
            "--events-port",
            type=int,
            default=None,
            help="port of the event-stream listener (default: the HTTP port + 1)",
        )
        parser.add_argument(
            "--workers", type=int, default=os.cpu_count() or 1, help="HTTP worker processes"
        )
        parser.add_argument(
            "--api-streams",
            type=_stream_count,
            metavar="N",
            default=API_STREAMS,
            help="event streams each HTTP worker may send on the HTTP port, a thread each "
            f"(default {API_STREAMS}; past them 503; 0: the listener's port only)",
        )
        parser.add_argument(
            "--optimizers",
            type=int,
            default=os.cpu_count() or 1,
            help="background workers (optimizing, and compacting at the lowest priority)",
        )
        parser.add_argument(
            "--deliverers",
            type=int,
            default=1,
            help="processes sending events to webhooks and MQTT (0: run manage.py deliver apart)",
        )
        parser.add_argument(
            "--graceful-timeout",
            type=int,
            default=30,
            help="seconds in-flight requests get to finish after SIGTERM",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not os.environ.get("SECRET_KEY"):
            raise CommandError("serve runs with DEBUG off: set SECRET_KEY (and ALLOWED_HOSTS)")
        events_port = options["events_port"] or options["port"] + 1
        # A port taken is a line naming it, not a server's traceback (API.md §15).
        _check_free(options["host"], options["port"], socket.SOCK_STREAM, "HTTP")
        _check_free(options["host"], events_port, socket.SOCK_STREAM, "event streams")
        if options["coap_port"]:
            _check_free(options["coap_host"], options["coap_port"], socket.SOCK_DGRAM, "CoAP")
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        env = {
            **os.environ,
            "DEBUG": "0",
            "DJANGO_SETTINGS_MODULE": "config.settings",
            # Fast ingest; the full optimization runs beside (docs/performance.md).
            "IMAGES_OPTIMIZE": os.environ.get("IMAGES_OPTIMIZE", "deferred"),
            # Workers share metrics through files here (ops.metrics).
            "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix="images-metrics-"),
        }
        env["IMAGES_EVENTS_PORT"] = str(events_port)
        env["IMAGES_API_PORT"] = str(options["port"])
        children = [self._http(options, env), self._streams(options, events_port, env)]
        if options["coap_port"]:
            children.append(self._coap(options, env))
        # Background work that must never take the servers down with it: a
        # worker that exits is started again (after a pause, so that one that
        # keeps failing does not spin).
        # Each helper by name: its command, and its process.
        helpers: dict[str, tuple[tuple[str, ...], subprocess.Popen]] = {}
        for worker in range(options["optimizers"]):
            # Below the HTTP workers (nice 10), compacting below that (nice 19).
            command = ("optimize", "--watch", "--nice", "10")
            helpers[f"optimize {worker + 1}"] = (command, self._manage(env, *command))
        # Always: a policy added while serving (manage.py policy) applies
        # without a restart; an idle watcher asks once an interval.
        command = ("prune", "--watch", "--verbosity", "0")
        helpers["prune"] = (command, self._manage(env, *command))
        for deliverer in range(options["deliverers"]):
            # Webhooks and MQTT (images.delivery): idle until a receiver exists.
            # Only on CPU the rest leaves idle: a burst of uploads is
            # answered first and its deliveries follow (docs/performance.md,
            # "Deliveries"); with idle CPU they leave within milliseconds.
            command = ("deliver", "--idle")
            helpers[f"deliver {deliverer + 1}"] = (command, self._manage(env, *command))
        self.stdout.write(
            f"serving HTTP on {options['host']}:{options['port']} ({options['workers']} workers)"
            + f", event streams on {events_port}, {options['optimizers']} background workers"
            + (f", CoAP on UDP {options['coap_port']}" if options["coap_port"] else "")
        )
        try:
            self._supervise(children, helpers, env)
        finally:
            shutil.rmtree(env["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)

    def _http(self, options: dict[str, Any], env: dict[str, str]) -> subprocess.Popen:
        # Event streams on the API port (API.md §15): each worker sends up
        # to --api-streams of them, each from a thread of its own, while its
        # one request thread goes on (images/http/stream_threads.py; why,
        # and the measurement: docs/live.md).
        env = {**_with_stream_holds(env), "IMAGES_EVENTS_THREADS": str(options["api_streams"])}
        command = [
            sys.executable,
            "-m",
            "granian",
            "--interface",
            "wsgi",
            "--host",
            options["host"],
            "--port",
            str(options["port"]),
            "--workers",
            str(options["workers"]),
            "--blocking-threads",
            "1",
            "--workers-kill-timeout",
            str(options["graceful_timeout"]),
            "--respawn-failed-workers",
            "--no-ws",
            # HTTP/1.1 only: with "auto" granian first guesses the protocol,
            # with no timer, so a connection that sends nothing is held for
            # ever; with "1" hyper's header timer starts at accept (API.md
            # §15). HTTP/2 belongs to the TLS proxy in front (docs/deploy.md).
            "--http",
            "1",
            "--http1-header-read-timeout",
            "10000",
            # The gallery's stylesheet, served by granian itself (no Python).
            "--static-path-route",
            "/static",
            "--static-path-mount",
            str(settings.STATIC_ROOT),
            "config.wsgi:application",
        ]
        return _child(command, env)

    def _streams(self, options: dict[str, Any], port: int, env: dict[str, str]) -> subprocess.Popen:
        """The event streams' listener (images.http.streams): one process, one event loop.

        Measured (docs/live.md): a WSGI worker holds a thread per open
        stream, and ASGI for the whole API costs ordinary requests half
        their rate or more; here, an open stream costs a coroutine. The
        gallery's pages open their streams here; a proxy may send it all
        of them (docs/deploy.md).
        """
        command = [
            sys.executable,
            "-m",
            "granian",
            "--interface",
            "asgi",
            "--host",
            options["host"],
            "--port",
            str(port),
            "--workers",
            "1",
            # Streams never finish on their own: on SIGTERM they are cut after
            # a moment, and their clients reconnect (with Last-Event-ID, to
            # another instance or to this one restarted) and miss nothing.
            "--workers-kill-timeout",
            "1",
            "--respawn-failed-workers",
            "--no-ws",
            # Each open stream is a connection: let thousands in.
            "--backpressure",
            "20000",
            # A connection that sends no complete request within 10 s is
            # closed (API.md §15): idle ones cannot hold the listener (with
            # HTTP/1.1 only, as on the API's port, the timer starts at accept).
            "--http",
            "1",
            "--http1-header-read-timeout",
            "10000",
            "config.events:application",
        ]
        env = _with_stream_holds(env)
        # Below the HTTP workers: on a busy box the scheduler runs a worker
        # (which may hold SQLite's write lock, with the other waiting for it)
        # before the listener, whose deliveries can wait some milliseconds.
        return _child(command, env, nice=STREAMS_NICE)

    def _coap(self, options: dict[str, Any], env: dict[str, str]) -> subprocess.Popen:
        host, port = options["coap_host"], str(options["coap_port"])
        return self._manage(env, "runcoap", "--host", host, "--port", port)

    def _manage(self, env: dict[str, str], *command: str) -> subprocess.Popen:
        return _child([sys.executable, str(ROOT / "manage.py"), *command], env)

    def _supervise(
        self,
        children: list[subprocess.Popen],
        helpers: dict[str, tuple[tuple[str, ...], subprocess.Popen]],
        env: dict[str, str],
    ) -> None:
        stopping = False
        restart_at: dict[str, float] = {}

        def everyone() -> list[subprocess.Popen]:
            return [*children, *(process for _, process in helpers.values())]

        def forward(signum: int, frame: FrameType | None) -> None:
            nonlocal stopping
            stopping = True
            for child in everyone():
                if child.poll() is None:
                    child.send_signal(signum)

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        while any(child.poll() is None for child in everyone()):
            if not stopping and any(child.poll() is not None for child in children):
                # One server died on its own: take the other down too, so a
                # supervisor (systemd) sees the failure and restarts us.
                forward(signal.SIGTERM, None)
            if not stopping:
                for name, (command, helper) in helpers.items():
                    if helper.poll() is None:
                        continue
                    now = time.monotonic()
                    if name not in restart_at:
                        self.stderr.write(
                            f"{name} exited with code {helper.returncode}; restarting it"
                        )
                        restart_at[name] = now + _RESTART_PAUSE_SECONDS
                    elif now >= restart_at[name]:
                        del restart_at[name]
                        helpers[name] = (command, self._manage(env, *command))
            time.sleep(0.2)
        codes = [child.returncode for child in children]
        if not stopping and any(codes):
            raise CommandError(f"a server exited unexpectedly (exit codes {codes})")


def _stream_count(value: str) -> int:
    """``--api-streams``: 0 to 1024 (a thread each)."""
    try:
        count = int(value)
    except ValueError:
        count = -1
    if not 0 <= count <= 1024:
        raise argparse.ArgumentTypeError(f"not a number of streams from 0 to 1024: {value!r}")
    return count


def _with_stream_holds(env: dict[str, str]) -> dict[str, str]:
    """``env`` for the processes that hold event streams: where they count them together.

    A client's streams count against one cap whichever process holds them
    (images/live/holds.py); the directory is in serve's own temporary one,
    removed with it.
    """
    holds = Path(env["PROMETHEUS_MULTIPROC_DIR"]) / "event-streams"
    holds.mkdir(mode=0o700, exist_ok=True)
    return {**env, "IMAGES_EVENTS_HOLDS_DIR": str(holds)}


def _check_free(host: str, port: int, kind: int, what: str) -> None:
    """CommandError naming the port when nothing could listen there (taken, or not allowed)."""
    try:
        infos = socket.getaddrinfo(host, port, type=kind)
    except OSError as exc:
        raise CommandError(f"cannot listen for {what} on {host}:{port}: {exc}") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
        try:
            probe.bind(address)
        except OSError as exc:
            raise CommandError(
                f"cannot listen for {what} on {host}:{port}: {exc.strerror or exc}"
            ) from None


def _child(command: list[str], env: dict[str, str], *, nice: int = 0) -> subprocess.Popen:
    """A server process in its own process group that dies with ``serve``.

    Its own group: a Ctrl-C or a group-wide SIGTERM (systemd's default
    KillMode) reaches only ``serve``, which passes it on once, in order;
    granian's workers receiving it at the same time as their master could
    hang its shutdown. Linux's parent-death signal stops the child if
    ``serve`` itself is killed (SIGKILL cannot be passed on).
    """

    def prepare() -> None:
        _terminate_with_parent()
        if nice:
            os.nice(nice)

    return subprocess.Popen(command, cwd=ROOT, env=env, process_group=0, preexec_fn=prepare)


def _terminate_with_parent() -> None:
    if sys.platform == "linux":
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
