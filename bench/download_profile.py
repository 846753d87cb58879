"""In-process CPU of one download through the real WSGI application (prints figures).

    python bench/download_profile.py [--requests 5000] [--profile] [--stages]

Run from the repository root. A fresh SQLite database in a temporary
directory, one stored ``skimage__brick.png`` (optimized inline, so its bytes
are final), then ``--requests`` downloads straight into
``config.wsgi.application`` (no socket, no server): by id, by device and
timestamp, a revalidation (``304``), and Django's floor: a view that returns
an empty ``200`` at once, through the same middleware, signals and handler.
Printed: CPU microseconds per request (``time.process_time``), the median of
five runs. ``--profile`` prints cProfile's top functions for a by-id download;
``--stages`` its time per stage (``bench.stages``). Nothing here asserts.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)  # the root, not bench/

from bench.support import CORPUS  # noqa: E402

KEY = {"deviceId": "profile", "timestamp": "2024-01-01T00:00:00Z"}
FLOOR_PATH = "/collections/bench-floor"


def environ(path: str, query: str = "", **headers: str) -> dict:
    """A WSGI environ as granian hands it over (the headers as ``HTTP_*``)."""
    env = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SCRIPT_NAME": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_USER_AGENT": "wrk",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0),
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    env.update(headers)
    return env


def request_once(application: Callable, env: dict) -> int:
    """One request through ``application``; its status. The body is read as a server would."""
    status: list[str] = []

    def start_response(line: str, headers: list, exc_info: object = None) -> None:
        status.append(line)

    env["wsgi.input"] = io.BytesIO()
    result = application(dict(env), start_response)
    try:
        for _chunk in result:
            pass
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return int(status[0].split()[0])


def cpu_us(application: Callable, env: dict, requests: int) -> float:
    """CPU microseconds per request over ``requests`` requests (after 200 warm-up ones)."""
    for _ in range(200):
        request_once(application, env)
    started = time.process_time()
    for _ in range(requests):
        request_once(application, env)
    return (time.process_time() - started) / requests * 1e6


def set_up(directory: Path) -> tuple[Callable, str]:
    """Django on a fresh database with the brick stored; the application and the image's id."""
    os.environ.update(
        {
            "DATABASE_URL": f"sqlite:///{directory / 'profile.sqlite3'}",
            "SECRET_KEY": "bench-only-secret",
            "DEBUG": "0",
            "ALLOWED_HOSTS": "127.0.0.1",
            "REQUEST_LOG_LEVEL": "WARNING",  # as the HTTP benches run serve
            "IMAGES_OPTIMIZE": "inline",
        }
    )
    os.environ.pop("DJANGO_SETTINGS_MODULE", None)
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    settings.ROOT_URLCONF = "bench.download_floor_urls"
    from config.wsgi import application

    body = (CORPUS / "skimage__brick.png").read_bytes()
    from urllib.parse import urlencode

    env = environ("/collections/images", urlencode(KEY))
    env.update(
        REQUEST_METHOD="POST",
        CONTENT_TYPE="image/png",
        CONTENT_LENGTH=str(len(body)),
        HTTP_ACCEPT="application/json",
    )
    captured: list[bytes] = []

    def start_response(line: str, headers: list, exc_info: object = None) -> None:
        assert line.startswith("201"), line

    env["wsgi.input"] = io.BytesIO(body)
    captured.extend(application(env, start_response))
    import json

    return application, json.loads(b"".join(captured))["id"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--profile", action="store_true", help="cProfile's top functions")
    parser.add_argument("--stages", action="store_true", help="time per stage (bench.stages)")
    args = parser.parse_args()
    from urllib.parse import urlencode

    with tempfile.TemporaryDirectory(prefix="download-profile-") as name:
        application, image_id = set_up(Path(name))
        from django.conf import settings

        by_id = environ(f"/collections/images/{image_id}")
        cases = {
            "by id": by_id,
            "by deviceId+timestamp": environ("/collections/images", urlencode(KEY)),
            "by id, 304 (If-None-Match)": environ(
                f"/collections/images/{image_id}", HTTP_IF_NONE_MATCH="*"
            ),
            "Django's floor (empty 200, same middleware)": environ(FLOOR_PATH),
        }
        fast = getattr(settings, "IMAGES_DOWNLOAD_FAST_PATH", None)
        print(
            f"in-process CPU per request, {args.requests} requests x 5 runs, median "
            f"(SQLite, brick.png {(CORPUS / 'skimage__brick.png').stat().st_size} bytes, "
            f"IMAGES_DOWNLOAD_FAST_PATH={fast})"
        )
        for label, env in cases.items():
            status = request_once(application, env)
            runs = [cpu_us(application, env, args.requests) for _ in range(5)]
            print(f"  {label:<45} {status}  {statistics.median(runs):7.1f} us", flush=True)
        if args.profile:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(args.requests):
                request_once(application, by_id)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
        if args.stages:
            from bench.stages import print_stages

            print_stages(lambda: request_once(application, by_id), args.requests)


if __name__ == "__main__":
    main()
