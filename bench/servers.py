"""Which WSGI server `serve` should run: the same app under each, measured.

    python bench/servers.py [--seconds 10]

Runs gunicorn (sync workers, as the prototype did; and gthread) and granian,
each with 2 worker processes on a fresh SQLite database holding one image, and
measures with wrk at 4 connections: a download by id, its 304 revalidation,
and /healthz (the framework's floor: one trivial query). Prints figures.
gunicorn comes from requirements-dev.txt; it is not a runtime dependency.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/http.py would shadow the standard library's ``http`` (see there).
ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import urllib.request  # noqa: E402

from bench.support import (  # noqa: E402
    CORPUS,
    free_port,
    print_wrk,
    serve_env,
    stop,
    wait_for_port,
    wrk,
)

SERVERS = {
    "gunicorn sync, 2 workers": "-m gunicorn -w 2 -b 127.0.0.1:{port}",
    "gunicorn gthread, 2 workers x 4 threads": "-m gunicorn -w 2 --threads 4 -b 127.0.0.1:{port}",
    "granian, 2 workers (as serve runs it)": (
        "-m granian --interface wsgi --workers 2 --blocking-threads 1 --no-ws"
        " --host 127.0.0.1 --port {port}"
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-servers-"))
    env = serve_env(f"sqlite:///{tmp / 'db.sqlite3'}", DEBUG="0")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    image = (CORPUS / "skimage__brick.png").read_bytes()
    for name, arguments in SERVERS.items():
        port = free_port()
        command = [sys.executable, *arguments.format(port=port).split()]
        process = subprocess.Popen(
            [*command, "config.wsgi:application"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(port, process)
            url = f"http://127.0.0.1:{port}"
            request = urllib.request.Request(
                f"{url}/collections/images?deviceId={port}&timestamp=2024-01-01T00:00:00Z",
                data=image,
                headers={"Content-Type": "image/png", "Accept": "application/json"},
            )
            meta = json.loads(urllib.request.urlopen(request, timeout=60).read())
            item = url + meta["href"]
            print(name, flush=True)
            print_wrk("  download by id, c4", wrk(item, args.seconds, 4))
            etag = f'If-None-Match: "{meta["sha256"]}"'
            print_wrk("  304 revalidation, c4", wrk(item, args.seconds, 4, "-H", etag))
            print_wrk("  /healthz, c4", wrk(f"{url}/healthz", args.seconds, 4))
        finally:
            stop(process, timeout=60)


if __name__ == "__main__":
    main()
