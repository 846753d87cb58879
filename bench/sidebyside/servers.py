"""The servers ``python -m bench.sidebyside`` measures, started and given an image.

The prototype's stand-in (``bench/prototype``) under gunicorn; ours under
``serve``, under the same gunicorn, and with the bytes in a local SeaweedFS.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from bench.support import (
    ROOT,
    free_port,
    fresh_database,
    serve_env,
    start_serve,
    stop,
    tree_cpu,
    wait_for_port,
)

# What the prototype was measured at (gunicorn, 2 sync workers, SQLite, this kind of box).
PUBLISHED = {"ingest brick req/s": 16.5, "download req/s": 1039.0}
# The stand-in's defaults match the per-image CPU figures; "plain" is one Pillow re-save.
CALIBRATIONS = {
    "brief": {},
    "plain": {"PROTOTYPE_PNG_PASSES": "1", "PROTOTYPE_JPEG_PASSES": "1"},
}
KEY = {"deviceId": "side-by-side", "timestamp": "2024-01-01T00:00:00Z"}
DOWNLOAD_PATH = "/collections/images?" + urllib.parse.urlencode(KEY)
BUCKET = "sidebyside"
# The prototype's server. gunicorn's control socket would go to one path shared by
# every gunicorn on the machine (~/.gunicorn/gunicorn.ctl).
GUNICORN = [sys.executable, "-m", "gunicorn", "--workers", "2", "--no-control-socket"]


@dataclass
class Server:
    """A running server, the base URL it answers at and the processes whose CPU is its cost."""

    name: str
    base: str
    process: subprocess.Popen
    also_cost: list[subprocess.Popen] = field(default_factory=list)

    def cpu(self) -> float:
        return sum(tree_cpu(p.pid) for p in [self.process, *self.also_cost])


def launch(
    stack: ExitStack, command: list[str], env: dict[str, str], log: Path
) -> subprocess.Popen:
    """Start ``command`` in the repository root, output to ``log``; stopped as ``stack`` closes."""
    with open(log, "wb") as output:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    stack.callback(stop, process, 30)
    return process


def prototype_env(database: Path, calibration: str) -> dict[str, str]:
    env = {**os.environ, "PROTOTYPE_DATABASE": str(database), **CALIBRATIONS[calibration]}
    for name in ("DJANGO_SETTINGS_MODULE", "PROTOTYPE_PNG_PASSES", "PROTOTYPE_JPEG_PASSES"):
        if name not in CALIBRATIONS[calibration]:
            env.pop(name, None)
    return env


def start_prototype(stack: ExitStack, directory: Path, name: str, calibration: str) -> Server:
    """The stand-in under gunicorn with 2 sync workers, on ``directory/prototype.sqlite3``."""
    directory.mkdir()
    env = prototype_env(directory / "prototype.sqlite3", calibration)
    subprocess.run(
        [sys.executable, "-m", "bench.prototype", "migrate", "--run-syncdb", "-v0"],
        cwd=ROOT,
        env=env,
        check=True,
    )
    port = free_port()
    command = [*GUNICORN, "-b", f"127.0.0.1:{port}"]
    process = launch(
        stack, [*command, "bench.prototype.wsgi:application"], env, directory / "gunicorn.log"
    )
    wait_for_port(port, process)
    return Server(name, f"http://127.0.0.1:{port}", process)


def start_ours_serve(
    stack: ExitStack,
    directory: Path,
    name: str,
    extra: dict[str, str] | None = None,
    root: Path = ROOT,
) -> Server:
    """``manage.py serve`` with 2 granian workers (and its optimizer), as one_run starts it.

    ``root``: another checkout of this repository to run instead (``--also``).
    """
    directory.mkdir()
    database_url = stack.enter_context(fresh_database(directory))
    port = free_port()
    env = serve_env(database_url, DEBUG="0", **(extra or {}))
    process = start_serve(directory / "serve.log", env, port, 2, "--coap-port", "0", root=root)
    stack.callback(stop, process, 30)
    return Server(name, f"http://127.0.0.1:{port}", process)


def start_ours_gunicorn(stack: ExitStack, directory: Path, name: str) -> Server:
    """``config.wsgi`` under the prototype's gunicorn set-up (inline optimization)."""
    directory.mkdir()
    database_url = stack.enter_context(fresh_database(directory))
    env = serve_env(database_url, DEBUG="0")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    port = free_port()
    command = [*GUNICORN, "-b", f"127.0.0.1:{port}"]
    process = launch(stack, [*command, "config.wsgi:application"], env, directory / "gunicorn.log")
    wait_for_port(port, process)
    return Server(name, f"http://127.0.0.1:{port}", process)


def post(url: str, body: bytes, content_type: str) -> dict:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": content_type, "Accept": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def store_prototype_image(server: Server, image: bytes) -> None:
    body = json.dumps({**KEY, "imageData": base64.b64encode(image).decode()}).encode()
    post(server.base + "/collections/images", body, "application/json")


def store_our_image(server: Server, image: bytes) -> str:
    """Upload raw, then wait until the deferred optimizer (serve) has made the bytes final.

    Returns the image's path by id (its ``href``).
    """
    meta = post(server.base + DOWNLOAD_PATH, image, "image/png")
    deadline = time.monotonic() + 120
    while not meta.get("optimized", True) and time.monotonic() < deadline:
        time.sleep(0.5)
        request = urllib.request.Request(
            server.base + meta["href"], headers={"Accept": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                meta = json.loads(response.read())
        except urllib.error.HTTPError as error:
            if error.code < 500:
                raise
            print(f"{server.name}: {error.code} while polling the metadata", file=sys.stderr)
    return meta["href"]


def start_s3(stack: ExitStack, directory: Path) -> tuple[dict[str, str], subprocess.Popen]:
    """A local SeaweedFS with one bucket: the service's environment for it, and its process."""
    import boto3

    from ops.seaweedfs import ObjectStore

    store = ObjectStore(directory)
    stack.callback(store.stop)
    store.wait()
    env = store.environment(BUCKET)
    boto3.client(
        "s3",
        endpoint_url=store.endpoint_url,
        region_name=env["AWS_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    ).create_bucket(Bucket=BUCKET)
    return env, store.process
