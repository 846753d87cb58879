"""The prototype and this service side by side, one run on one box (prints figures).

    python bench/sidebyside.py [--seconds 10] [--rounds 3] [--ingest-seconds 30]
        [--rate-factor 3] [--optimisers 1] [--calibration brief|plain|both]
        [--only download|ingest] [--patience 60]

The prototype's code is not here: ``bench/prototype/`` is a stand-in rebuilt from
its README and the figures it was measured at (see its README.md). Everything
binds to 127.0.0.1 on free ports; every server gets a fresh database (SQLite, or
for ours PostgreSQL when DATABASE_URL names it), removed at the end.

1. Download of one stored ``skimage__brick.png`` by ``deviceId`` and
   ``timestamp`` (the prototype's URL), wrk at 4 connections for ``--seconds``,
   in alternating rounds: the prototype under gunicorn (2 sync workers); ours
   under ``manage.py serve --workers 2`` (granian); ours under the same
   gunicorn; ours under ``serve`` with the bytes in a local SeaweedFS. Printed:
   req/s per round, the median, the server's CPU per request (its process tree,
   SeaweedFS included for the S3 row) and median ours/prototype.
2. Ingest end to end. The prototype re-saves inline, so accepted == done: its
   closed-loop rate (wrk c4, JSON with base64, unique keys) for brick.png, then
   china.jpg, with its workers' CPU per upload, for each calibration asked for
   (``brief``: the per-image CPU figures it was measured at; ``plain``: one
   Pillow re-save). Then ours through ``bench.sustained.one_run`` (raw bodies,
   open loop) offered ``--rate-factor`` times the highest prototype rate of that
   image: accepted/s, optimised/s, lag, backlog, drain and ratio, and the
   ratios to each prototype rate (and to the published 16.5 req/s for brick).
   Rates are over the time the offer really took (see ``offer_timed``). A 30 s
   run can hardly build a lag past the bound (60 s); the project's goals need
   ``--ingest-seconds 180``. one_run waits for the backlog to drain
   (up to 900 s per image), which is most of this phase's time.

The box may be shared: before every measurement the script waits up to
``--patience`` seconds for the machine to be quiet, and prints how busy it was
(before, and during: cores busy with neither the server measured nor wrk).
Nothing here asserts.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/http.py would shadow the standard library's ``http`` (see there).
ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)

import argparse  # noqa: E402
import base64  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.parse  # noqa: E402
import urllib.request  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import ExitStack, contextmanager  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from types import FrameType  # noqa: E402

from bench import sustained  # noqa: E402
from bench.support import free_port, fresh_database, query_database, stop, wait_for_port  # noqa: E402
from bench.sustained import LAG_BOUND, one_run  # noqa: E402

CORPUS = Path(os.environ.get("IMAGE_CORPUS", ROOT.parent / "shared" / "corpus"))
IMAGES = ("skimage__brick.png", "sklearn__china.jpg")
# What the prototype was measured at (gunicorn, 2 sync workers, SQLite, this kind of box).
PUBLISHED = {"ingest brick req/s": 16.5, "download req/s": 1039.0}
# The stand-in's defaults match the per-image CPU figures; "plain" is one Pillow re-save.
CALIBRATIONS = {
    "brief": {},
    "plain": {"PROTOTYPE_PNG_PASSES": "1", "PROTOTYPE_JPEG_PASSES": "1"},
}
TARGET_CPU_MS = {"skimage__brick.png": 200.0, "sklearn__china.jpg": 52.0}
KEY = {"deviceId": "side-by-side", "timestamp": "2024-01-01T00:00:00Z"}
DOWNLOAD_PATH = "/collections/images?" + urllib.parse.urlencode(KEY)
BUCKET = "sidebyside"
# The prototype's server. gunicorn's control socket would go to one path shared by
# every gunicorn on the machine (~/.gunicorn/gunicorn.ctl).
GUNICORN = [sys.executable, "-m", "gunicorn", "--workers", "2", "--no-control-socket"]

PROTOTYPE_INGEST_LUA = """
local data = io.open("{file}", "rb"):read("*all")
local counter = 0
local threads = {{}}
function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end
function request()
  counter = counter + 1
  local body = string.format('{{"deviceId":"{prefix}-%d",' ..
    '"timestamp":"2024-01-01T00:00:00.%06dZ","imageData":"', tid, counter)
  return wrk.format("POST", "/collections/images", {{["Content-Type"] = "application/json"}},
    body .. data .. '"}}')
end
"""


def machine_cpu() -> float:
    """CPU seconds every core of the machine has been busy since boot (``/proc/stat``)."""
    with open("/proc/stat") as stat:
        user, nice, system, idle, iowait, irq, softirq, steal = map(
            int, stat.readline().split()[1:9]
        )
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    """CPU seconds of this script's finished children (wrk, once it has exited)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def busy_cores(seconds: float) -> float:
    """How many cores the whole machine kept busy over the next ``seconds``."""
    before = machine_cpu()
    time.sleep(seconds)
    return (machine_cpu() - before) / seconds


def settle(patience: float) -> float:
    """Wait up to ``patience`` seconds for a quiet machine (other work skews every figure).

    Quiet: under 0.25 busy cores over 3 s. Returns the last figure.
    """
    deadline = time.monotonic() + patience
    while (busy := busy_cores(3.0)) >= 0.25 and time.monotonic() < deadline:
        pass
    return busy


def tree_cpu(root: int) -> float:
    """CPU seconds (user + system) of ``root`` and every live descendant."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += times.get(pid, 0.0)
        todo.extend(children.get(pid, []))
    return total


@dataclass
class Wrk:
    rps: float
    requests: int
    errors: int


def wrk(url: str, seconds: float, *extra: str) -> Wrk:
    """wrk at 4 connections, 2 threads: req/s, completed requests, failures (non-2xx, socket)."""
    done = subprocess.run(
        ["wrk", "-t2", "-c4", f"-d{seconds:.0f}s", "--timeout", "30s", *extra, url],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise RuntimeError(f"wrk on {url} failed: {done.stdout}{done.stderr}")
    out = done.stdout
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    return Wrk(
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        requests=int(re.search(r"(\d+) requests in", out).group(1)),
        errors=(int(failed.group(1)) if failed else 0)
        + (sum(int(n) for n in socket_errors.groups()) if socket_errors else 0),
    )


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


def ours_env(database_url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        **(extra or {}),
        "DATABASE_URL": database_url,
        "DEBUG": "0",
        "SECRET_KEY": "bench-only",
        "ALLOWED_HOSTS": "127.0.0.1",
        "REQUEST_LOG_LEVEL": "WARNING",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
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
    stack: ExitStack, directory: Path, name: str, extra: dict[str, str] | None = None
) -> Server:
    """``manage.py serve`` with 2 granian workers (and its optimiser), as one_run starts it."""
    directory.mkdir()
    database_url = stack.enter_context(fresh_database(directory))
    port = free_port()
    command = [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port)]
    process = launch(
        stack,
        [*command, "--coap-port", "0", "--workers", "2"],
        ours_env(database_url, extra),
        directory / "serve.log",
    )
    wait_for_port(port, process, timeout=60)
    return Server(name, f"http://127.0.0.1:{port}", process)


def start_ours_gunicorn(stack: ExitStack, directory: Path, name: str) -> Server:
    """``config.wsgi`` under the prototype's gunicorn set-up (inline optimisation)."""
    directory.mkdir()
    database_url = stack.enter_context(fresh_database(directory))
    env = ours_env(database_url)
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


def store_our_image(server: Server, image: bytes) -> None:
    """Upload raw, then wait until the deferred optimiser (serve) has made the bytes final."""
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


def start_s3(stack: ExitStack, directory: Path) -> tuple[dict[str, str], subprocess.Popen]:
    """A local SeaweedFS with one bucket: the service's environment for it, and its process."""
    import boto3

    from ops.objectstore import ObjectStore

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


@dataclass
class Measured:
    rps: float
    errors: int
    server_us: float  # the server's CPU per request
    other_cores: float  # busy cores that were neither the server nor wrk


def measure(server: Server, seconds: float) -> Measured:
    """One wrk run on the download URL, and where the machine's CPU went meanwhile."""
    machine, own, load = machine_cpu(), server.cpu(), children_cpu()
    started = time.monotonic()
    result = wrk(server.base + DOWNLOAD_PATH, seconds)
    elapsed = time.monotonic() - started
    own = server.cpu() - own
    other = machine_cpu() - machine - own - (children_cpu() - load)
    return Measured(
        rps=result.rps,
        errors=result.errors,
        server_us=own / max(result.requests, 1) * 1e6,
        other_cores=max(other, 0.0) / elapsed,
    )


def download(tmp: Path, seconds: float, rounds: int, patience: float) -> None:
    print(f"machine busy before the download phase: {settle(patience):.2f} cores", flush=True)
    image = (CORPUS / "skimage__brick.png").read_bytes()
    with ExitStack() as stack:
        prototype = start_prototype(
            stack, tmp / "dl-prototype", "prototype (gunicorn, 2 sync)", "brief"
        )
        store_prototype_image(prototype, image)
        serve = start_ours_serve(stack, tmp / "dl-serve", "ours, serve (granian, 2)")
        store_our_image(serve, image)
        gunicorn = start_ours_gunicorn(stack, tmp / "dl-gunicorn", "ours, gunicorn (2 sync)")
        store_our_image(gunicorn, image)
        s3_env, weed = start_s3(stack, tmp / "dl-weed")
        s3 = start_ours_serve(stack, tmp / "dl-serve-s3", "ours, serve, bytes in S3", s3_env)
        s3.also_cost.append(weed)
        store_our_image(s3, image)
        servers = [prototype, serve, gunicorn, s3]
        for server in servers:  # warm-up: imports, connections, caches
            measure(server, 2)
        runs: dict[str, list[Measured]] = {s.name: [] for s in servers}
        failed: dict[str, int] = {s.name: 0 for s in servers}
        for _ in range(rounds):
            for server in servers:
                settle(patience)
                try:
                    runs[server.name].append(measure(server, seconds))
                except RuntimeError as error:  # one lost run should not lose the others
                    print(error, file=sys.stderr)
                    failed[server.name] += 1
    print(
        f"\nDownload of one stored brick.png by deviceId+timestamp, wrk c4, {seconds:.0f} s x "
        f"{rounds} rounds, alternating (published prototype figure: "
        f"{PUBLISHED['download req/s']:,.0f} req/s)"
    )
    rounds_head = " ".join(f"{'round ' + str(n + 1):>9}" for n in range(rounds))
    print(
        f"{'server':<30} {rounds_head} {'median':>9} {'ours/proto':>10} {'/published':>10} "
        f"{'CPU us/req':>10} {'other cores':>11}"
    )
    reference = statistics.median(m.rps for m in runs[servers[0].name] or [float("nan")])
    for server in servers:
        measured = runs[server.name]
        if not measured:
            print(f"{server.name:<30} every run failed")
            continue
        median = statistics.median(m.rps for m in measured)
        errors = sum(m.errors for m in measured)
        notes = [f"{errors} errors"] if errors else []
        notes += [f"{failed[server.name]} runs failed"] if failed[server.name] else []
        cells = " ".join(f"{m.rps:9.1f}" for m in measured).ljust(10 * rounds - 1)
        print(
            f"{server.name:<30} {cells} {median:9.1f} {median / reference:9.2f}x "
            f"{median / PUBLISHED['download req/s']:9.2f}x "
            f"{statistics.median(m.server_us for m in measured):10.0f} "
            f"{max(m.other_cores for m in measured):11.2f}"
            + (f"  ({', '.join(notes)})" if notes else ""),
            flush=True,
        )
    print(
        "ours/proto: over the stand-in's median; /published: over the prototype's published "
        f"{PUBLISHED['download req/s']:,.0f} req/s. CPU us/req: the server's process tree per "
        "request (SeaweedFS included for S3). other cores: the most, over the rounds, busy "
        "with neither that server nor wrk (the idle servers included)"
    )


@dataclass
class PrototypeIngest:
    rate: float
    cpu_ms: float
    stored: int
    errors: int
    other_cores: float
    busy_before: float


def prototype_ingest(
    tmp: Path, calibration: str, seconds: float, patience: float
) -> dict[str, PrototypeIngest]:
    """Closed loop at c4: each image in turn for ``seconds``, JSON with base64, unique keys."""
    found = {}
    with ExitStack() as stack:
        directory = tmp / f"in-prototype-{calibration}"
        server = start_prototype(stack, directory, "prototype", calibration)
        for name in IMAGES:
            encoded = tmp / f"{name}.b64"
            encoded.write_bytes(base64.b64encode((CORPUS / name).read_bytes()))
            script = tmp / f"{name}.lua"
            prefix = f"{calibration}-{name}"
            script.write_text(PROTOTYPE_INGEST_LUA.format(file=encoded, prefix=prefix))
            busy_before = settle(patience)
            machine, own, load = machine_cpu(), server.cpu(), children_cpu()
            result = wrk(server.base + "/collections/images", seconds, "-s", str(script))
            own = server.cpu() - own
            other = machine_cpu() - machine - own - (children_cpu() - load)
            stored = query_database(
                f"sqlite:///{directory / 'prototype.sqlite3'}",
                "SELECT count(*) FROM prototype_image WHERE device_id LIKE ?",
                (prefix + "-%",),
            )[0][0]
            found[name] = PrototypeIngest(
                rate=(result.requests - result.errors) / seconds,
                cpu_ms=own / max(result.requests, 1) * 1000,
                stored=stored,
                errors=result.errors,
                other_cores=max(other, 0.0) / seconds,
                busy_before=busy_before,
            )
    return found


def ingest(
    tmp: Path,
    seconds: float,
    factor: float,
    optimisers: int,
    calibrations: list[str],
    patience: float,
) -> None:
    prototype = {c: prototype_ingest(tmp, c, seconds, patience) for c in calibrations}
    print(
        f"\nIngest, prototype (inline, accepted == done): closed loop, wrk c4, JSON base64, "
        f"unique keys, {seconds:.0f} s per image (published: brick "
        f"{PUBLISHED['ingest brick req/s']} req/s)"
    )
    print(
        f"{'image':<20} {'calibration':<12} {'req/s':>7} {'CPU ms/upload':>13} "
        f"{'target ms':>9} {'stored':>7} {'busy before':>11} {'other cores':>11}"
    )
    for calibration, figures in prototype.items():
        for name, run in figures.items():
            target = f"{TARGET_CPU_MS[name]:9.0f}" if calibration == "brief" else f"{'':9}"
            print(
                f"{name:<20} {calibration:<12} {run.rate:7.1f} {run.cpu_ms:13.1f} {target} "
                f"{run.stored:7d} {run.busy_before:11.2f} {run.other_cores:11.2f}"
                + (f"  ({run.errors} errors)" if run.errors else ""),
                flush=True,
            )
    print(
        f"\nIngest, ours end to end (bench.sustained.one_run: serve, 2 workers, {optimisers} "
        f"optimiser(s), raw bodies, open loop at {factor:g}x the highest prototype rate), "
        f"{seconds:.0f} s per image"
    )
    print(
        f"{'image':<20} {'offered/s':>9} {'offer s':>7} {'accepted/s':>10} {'optimised/s':>11} "
        f"{'max lag s':>9} {'end lag s':>9} {'backlog':>7} {'drain s':>7} {'ratio':>6} "
        f"{'bounded':>7} {'busy before':>11}"
    )
    ratios = []
    brick = None
    longest = 0.0
    for name in IMAGES:
        rate = factor * max(figures[name].rate for figures in prototype.values())
        busy_before = settle(patience)
        durations: list[float] = []
        with offer_timed(durations):
            run = one_run(CORPUS / name, rate, optimisers, seconds, {})
        took = max(durations[0], seconds)
        longest = max(longest, took)
        accepted, optimised = run.accepted / took, run.optimised_during / took
        if name == IMAGES[0]:
            brick = accepted, optimised
        print(
            f"{name:<20} {rate:9.1f} {took:7.1f} {accepted:10.1f} {optimised:11.1f} "
            f"{run.max_lag:9.1f} {run.lag_at_end:9.1f} {run.backlog_at_end:7.0f} "
            f"{run.drain_seconds:7.1f} {run.ratios['all']:6.4f} "
            f"{'yes' if run.bounded else 'no':>7} {busy_before:11.2f}"
            + (f"  ({run.errors} errors)" if run.errors else ""),
            flush=True,
        )
        for calibration, figures in prototype.items():
            reference = figures[name].rate
            ratios.append(
                f"{name:<20} {calibration:<12} {reference:10.1f} "
                f"{accepted / reference:12.2f}x {optimised / reference:13.2f}x"
            )
    print("\nIngest, ours / prototype (accepted/s and optimised/s over the prototype's req/s)")
    print(
        f"{'image':<20} {'calibration':<12} {'proto/s':>10} {'accepted/p':>13} {'optimised/p':>14}"
    )
    print("\n".join(ratios))
    if brick is not None:
        published = PUBLISHED["ingest brick req/s"]
        print(
            f"{IMAGES[0]:<20} {'published':<12} {published:10.1f} "
            f"{brick[0] / published:12.2f}x {brick[1] / published:13.2f}x"
        )
    print(
        "offer s: how long the open-loop offer really took (over the nominal seconds when "
        "the server fell behind); accepted/s and optimised/s are over it. bounded: "
        f"bench.sustained's verdict (lag at the end of the offer <= {LAG_BOUND} s); "
        "ratio: its bytes at rest / bytes received, all images, after the drain"
    )
    if longest < LAG_BOUND:
        print(
            f"(offers under {LAG_BOUND} s cannot build a lag past the {LAG_BOUND} s bound: "
            "use --ingest-seconds 180 for the goals)"
        )


@contextmanager
def offer_timed(durations: list[float]) -> Iterator[None]:
    """Record how long one_run's open-loop offer really took.

    one_run divides by the nominal seconds; when the server (or its Python
    client) falls behind the offered rate, the offer runs longer than that and
    the nominal rate overstates what was accepted.
    """
    original = sustained.offer

    def offer(*args: object) -> None:
        started = time.monotonic()
        try:
            original(*args)
        finally:
            durations.append(time.monotonic() - started)

    sustained.offer = offer
    try:
        yield
    finally:
        sustained.offer = original


@contextmanager
def logs_on_failure(directory: Path) -> Iterator[None]:
    """On an error, the end of every server log under ``directory`` (removed right after)."""
    try:
        yield
    except Exception:
        for log in sorted(directory.glob("*/*.log")):  # ours, not weed's own databases
            print(f"--- {log.relative_to(directory)}:", file=sys.stderr)
            print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
        raise


@contextmanager
def interrupted_by_sigterm() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so that every ``finally`` stops what it started."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per download figure")
    parser.add_argument("--rounds", type=int, default=3, help="alternating download rounds")
    parser.add_argument("--ingest-seconds", type=float, default=30.0, help="per ingest phase")
    parser.add_argument("--rate-factor", type=float, default=3.0, help="ours offered / prototype")
    parser.add_argument("--optimisers", type=int, default=1)
    parser.add_argument("--calibration", choices=["brief", "plain", "both"], default="both")
    parser.add_argument("--only", choices=["download", "ingest"])
    parser.add_argument(
        "--patience", type=float, default=60.0, help="seconds to wait for a quiet machine"
    )
    args = parser.parse_args()
    calibrations = ["brief", "plain"] if args.calibration == "both" else [args.calibration]
    database = "PostgreSQL" if "postgres" in os.environ.get("DATABASE_URL", "") else "SQLite"
    print(
        f"side by side on {os.cpu_count()} cores: prototype stand-in (bench/prototype, gunicorn "
        f"2 sync workers, SQLite) vs ours ({database}); wrk on the same cores",
        flush=True,
    )
    try:
        with ExitStack() as stack:
            stack.enter_context(interrupted_by_sigterm())
            name = stack.enter_context(tempfile.TemporaryDirectory(prefix="sidebyside-"))
            tmp = Path(name)
            stack.enter_context(logs_on_failure(tmp))
            if args.only in (None, "download"):
                download(tmp, args.seconds, args.rounds, args.patience)
            if args.only in (None, "ingest"):
                ingest(
                    tmp,
                    args.ingest_seconds,
                    args.rate_factor,
                    args.optimisers,
                    calibrations,
                    args.patience,
                )
    except KeyboardInterrupt:
        print("\ninterrupted: servers stopped, temporary files removed", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
