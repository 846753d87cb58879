"""Webhooks and MQTT (API.md §16): what deliveries cost uploads, their latency, a drain.

    python bench/deliveries.py [--uploads 1000] [--pairs 3] [--also-nice N] [--also-spin]
        [--clients 4]
        [--workers 2] [--paced 200] [--interval 0.05] [--drain 1000] [--down-extra 0]
        [--output /tmp/deliveries_bench.txt] [--database sqlite|postgres]

Run from anywhere; the database is a fresh SQLite file per ``serve``, or
with ``--database postgres`` a throwaway PostgreSQL database on the server
DATABASE_URL names (else 127.0.0.1:5432; bench/support.py). Each ``serve``
has ``--workers`` HTTP workers, one deliverer (the default ``--deliverers
1``), no CoAP and no optimizer (its backlog would take CPU from one run more
than another). One Mosquitto serves the whole bench; 9 live webhook
receivers and an MQTT subscriber to ``bench/#`` live in a forked process;
both in the idle scheduling class (they stand for machines elsewhere, so
they take only CPU nothing else wants; their CPU is printed):
bench/receivers.py holds them, bench/delivery_service.py the uploads and
``serve``, bench/delivery_report.py what is printed.

1. Rates: ``--pairs`` pairs of runs, interleaved A B A B: a fresh ``serve``
   with no receivers (A), then one with 10 webhooks registered by ``manage.py
   webhook add`` (9 live, 1 a closed port) and ``IMAGES_MQTT`` on the broker
   (B). After 20 warm-up uploads (delivered, in B), ``--uploads`` distinct
   32x32 noise PNGs (about 3 KB) go to 10 devices from ``--clients`` threads
   on keep-alive connections, each 201 stamped with ``time.time()``.
   Printed per run: uploads/s (over the first request to the last answer), the
   upload p50/p99, CPU seconds of serve's HTTP workers and of its deliverer
   while uploading, and, in B, how long after the last 201 every live receiver
   and the subscriber had every image (and the deliverer's CPU until then).
   Then the medians, their ratio, and the cost the CPU per upload implies;
   and each run's rate over its pair's A, their median and a 95 % bootstrap
   interval of it (bench/delivery_report.py's ``per_pair``).
   ``serve`` runs its deliverer in the idle class (``deliver --idle``). With
   ``--also-nice N`` each pair gets a third run (C): B with every thread of
   serve's deliverer moved to the normal class at nice N (an experiment). With
   ``--also-spin`` each pair gets a run S, the control: as A, with a busy
   loop per core in the idle class beside the uploads, so what idle-class
   work of any kind costs the uploads on this machine is printed beside what
   the deliverer's costs. With ``--pairs 0``, only 2 and 3.
2. Latency from an upload's 201 to its first arrival at each live receiver,
   and at the subscriber: p50/p99/max pooled over the B runs (under load,
   ``--clients`` uploading as fast as answered) and, on one more ``serve`` as
   in B, for ``--paced`` uploads one every ``--interval`` s.
3. Drain, on that ``serve``: one live receiver is taken down (its listener
   closed, its connections cut), ``--drain`` images are uploaded and delivered
   to the others, ``--down-extra`` seconds more pass, and it comes back on the
   same port. Printed: its retry state when it returns (the backoff then due
   dominates), the time from its return to the first post and to the last, and
   ``images_delivery_backlog`` from /metrics before, at its return and after.

Everything printed also goes to ``--output``. Nothing here asserts.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # bench/http.py would shadow the standard library's http

import argparse  # noqa: E402
import contextlib  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from bench.delivery_report import (  # noqa: E402
    Report,
    Run,
    latencies,
    latency_line,
    row,
    summary,
    under_load,
)
from bench.delivery_service import (  # noqa: E402
    DEVICES,
    LIVE,
    PREFIX,
    Service,
    box_cpu,
    idle_spinners,
    images,
    upload_all,
)
from bench.receivers import ReceiversProcess  # noqa: E402
from bench.support import (  # noqa: E402
    database_kind,
    free_port,
    fresh_database,
    process_cpu,
)
from ops.mosquitto import Mosquitto  # noqa: E402

WARM_UP = 20
# --database postgres without a DATABASE_URL naming one: the local server's.
LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


# --- Measuring -------------------------------------------------------------------


def wait_delivered(
    receivers: ReceiversProcess, count: int, timeout: float, skip: int | None = None
) -> float:
    """Until every live receiver (but ``skip``) and the subscriber have ``count`` images."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hooks, mqtt = receivers.call("counts")
        if mqtt >= count and all(n >= count for i, n in enumerate(hooks) if i != skip):
            return time.time()
        time.sleep(0.02)
    raise RuntimeError(f"not delivered within {timeout} s: {hooks}, MQTT {mqtt}")


def rate_run(
    args: argparse.Namespace,
    name: str,
    delivering: bool,
    broker: Mosquitto,
    receivers: ReceiversProcess,
    dead_url: str,
    batch: list[tuple[str, str, bytes]],
    warm: list[tuple[str, str, bytes]],
    nice: int = 0,
    spin: bool = False,
) -> Run:
    helpers = [receivers.pid, broker.process.pid]
    with tempfile.TemporaryDirectory() as tmp, fresh_database(Path(tmp)) as database_url:
        service = Service(
            Path(tmp), database_url, args.workers, broker.port if delivering else None
        )
        try:
            if nice:  # before any receiver: the deliverer's threads inherit it
                service.renice("deliver", nice)
            if delivering:
                urls = [f"http://127.0.0.1:{port}/hook" for port in receivers.ports]
                service.add_webhooks([*urls, dead_url])
                service.wait_leased(LIVE + 2)
            if nice:
                service.renice("deliver", nice)
            upload_all(service.port, warm, args.clients)
            if delivering:
                wait_delivered(receivers, len(warm), 60)
            receivers.call("take")
            cpu_before, box_before = service.cpu(), box_cpu()
            others_before = sum(process_cpu(pid) for pid in helpers)
            with idle_spinners() if spin else contextlib.nullcontext():
                uploads = upload_all(service.port, batch, args.clients)
            cpu_after, box_after = service.cpu(), box_cpu()
            others = sum(process_cpu(pid) for pid in helpers) - others_before
            cpu = {role: cpu_after[role] - cpu_before.get(role, 0.0) for role in cpu_after}
            busy = (box_after[0] - box_before[0]) / max(box_after[1] - box_before[1], 1e-9)
            run = Run(name, delivering, uploads, cpu, busy, others, nice, spin)
            if delivering:
                done = wait_delivered(receivers, len(uploads.answered), 300)
                run.caught_up = done - uploads.ended
                run.deliver_cpu_until_caught_up = service.cpu()["deliver"] - cpu_before["deliver"]
                run.arrivals = receivers.call("take")
            run.problems = service.problems()
        finally:
            service.stop()
    return run


# --- Main ------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--uploads", type=int, default=1000)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--paced", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--drain", type=int, default=1000)
    parser.add_argument("--down-extra", type=float, default=0.0)
    parser.add_argument(
        "--also-nice",
        type=int,
        default=0,
        metavar="N",
        help="a third run per round (C): as B with serve's deliverer reniced to N",
    )
    parser.add_argument(
        "--also-spin",
        action="store_true",
        help="a run per round (S): as A with an idle-class busy loop per core (the control)",
    )
    parser.add_argument("--output", type=Path, default=Path("/tmp/deliveries_bench.txt"))
    parser.add_argument(
        "--database",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="postgres: throwaway databases on DATABASE_URL's server, else on 127.0.0.1:5432",
    )
    args = parser.parse_args()
    if args.database == "postgres" and database_kind() != "PostgreSQL":
        os.environ["DATABASE_URL"] = LOCAL_POSTGRES
    elif args.database == "sqlite":
        os.environ.pop("DATABASE_URL", None)
    say = Report(args.output)

    work = Path(tempfile.mkdtemp(prefix="bench-deliveries-"))
    broker = Mosquitto(work, idle=True)
    broker.start()
    receivers = ReceiversProcess(LIVE, broker.port, PREFIX)  # forked before any thread
    dead_url = f"http://127.0.0.1:{free_port()}/nobody-listens"
    try:
        batch = images(args.uploads, WARM_UP)
        warm = images(WARM_UP, 0)
        say(
            f"python bench/deliveries.py: {database_kind()}; serve --workers {args.workers} "
            "--optimizers 0 --deliverers 1 --coap-port 0; "
            f"{os.cpu_count()} cores, shared with other work (load average "
            f"{os.getloadavg()[0]:.1f} at start), the clients on the same cores"
        )
        say(
            f"{args.uploads} uploads of distinct 32x32 noise PNGs (~{len(batch[0][2])} bytes) to "
            f"{DEVICES} devices from {args.clients} keep-alive clients per run; "
            f"receivers: {LIVE} live webhooks + 1 dead (closed port) + MQTT (Mosquitto), "
            "in the idle scheduling class (they stand for other machines)"
        )
        say()
        say(
            "1. Upload rate, runs interleaved (A: no receivers, B: 10 webhooks + MQTT"
            + (f", C: B with the deliverer at nice {args.also_nice})" if args.also_nice else ")")
        )
        say(
            f"{'run':<4} {'receivers':<25}{'upl/s':>9} {'p50 ms':>7} {'p99 ms':>7} "
            f"{'http s':>7} {'dlvr s':>7} {'dlvr+s':>6} {'caught':>7} {'rcv s':>7} {'box':>6}"
        )
        runs: list[Run] = []
        kinds = [("A", False, 0), ("B", True, 0)]
        if args.also_nice:
            kinds.append(("C", True, args.also_nice))
        if args.also_spin:
            kinds.append(("S", False, 0))
        for pair in range(args.pairs):
            for letter, delivering, nice in kinds:
                name = f"{letter}{pair + 1}"
                run = rate_run(
                    args,
                    name,
                    delivering,
                    broker,
                    receivers,
                    dead_url,
                    batch,
                    warm,
                    nice,
                    spin=letter == "S",
                )
                runs.append(run)
                say(row(run))
        say(
            "  (http s / dlvr s: CPU seconds of serve's HTTP workers / its deliverer while"
            " uploading; dlvr+s: the deliverer's until caught up;"
        )
        say(
            "   caught: seconds from the last 201 until every live receiver and the subscriber"
            " had every image; rcv s: CPU of the receivers' process and the broker;"
            " box: the machine's busy share, both cores)"
        )
        if runs:  # --pairs 0: latency and drain only
            summary(say, runs, kinds)
        say()

        delivered = [run for run in runs if run.delivering and not run.nice]
        say("2. Latency, 201 to first arrival (ms)")
        say(f"{'':<44} {'p50':>8} {'p99':>8} {'max':>8} {'n':>7} {'missing':>8}")
        if delivered:
            under_load(say, args, runs, delivered)

        with tempfile.TemporaryDirectory() as tmp, fresh_database(Path(tmp)) as database_url:
            service = Service(Path(tmp), database_url, args.workers, broker.port)
            try:
                urls = [f"http://127.0.0.1:{port}/hook" for port in receivers.ports]
                service.add_webhooks([*urls, dead_url])
                service.wait_leased(LIVE + 2)
                upload_all(service.port, warm, args.clients)
                wait_delivered(receivers, len(warm), 60)
                receivers.call("take")
                paced = upload_all(
                    service.port, images(args.paced, 100_000), 1, interval=args.interval
                )
                wait_delivered(receivers, len(paced.answered), 120)
                arrivals = receivers.call("take")
                say(
                    latency_line(
                        f"webhooks, paced (1 upload every {args.interval * 1000:.0f} ms)",
                        latencies(paced.answered, arrivals["hooks"]),
                        len(paced.answered) * LIVE,
                    )
                )
                say(
                    latency_line(
                        "MQTT, paced",
                        latencies(paced.answered, [arrivals["mqtt"][0]]),
                        len(paced.answered),
                    )
                )
                duplicates = sum(arrivals["posts"]) - sum(len(a) for a in arrivals["hooks"])
                say(f"  (repeated posts: {duplicates}; MQTT messages {arrivals['mqtt'][1]})")
                say()
                if args.drain:
                    drain(args, say, service, receivers)
                problems = service.problems()
                if problems:
                    say(f"serve log: {dict(problems)}")
            finally:
                service.stop()
    finally:
        receivers.stop()
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
        say.file.close()


def drain(
    args: argparse.Namespace, say: Report, service: Service, receivers: ReceiversProcess
) -> None:
    say(f"3. Drain: receiver 1 down while {args.drain} images are uploaded, then back")
    before = service.backlog()
    receivers.call("down", 0)
    down_at = time.time()
    uploads = upload_all(service.port, images(args.drain, 200_000), args.clients)
    others_done = wait_delivered(receivers, len(uploads.answered), 300, skip=0)
    if args.down_extra:
        time.sleep(args.down_extra)
    at_return = service.backlog()
    attempts, due_in, error = service.receiver_state(service.webhooks[0])
    receivers.call("up", 0)
    back_at = time.time()
    deadline = time.monotonic() + 1800
    while receivers.call("counts")[0][0] < len(uploads.answered):
        if time.monotonic() > deadline:
            raise RuntimeError("the receiver did not get its backlog within 30 minutes")
        time.sleep(0.05)
    arrivals = receivers.call("take")["hooks"][0]
    first, last = min(arrivals.values()), max(arrivals.values())
    time.sleep(1.5)  # its cursor is written after each batch
    after = service.backlog()
    say(
        f"down {back_at - down_at:.1f} s; uploads {uploads.rate:.0f}/s; the other receivers and "
        f"MQTT had them {others_done - uploads.ended:.2f} s after the last 201"
    )
    due = "no retry pending" if due_in is None else f"next attempt due in {due_in:.1f} s"
    say(f"at its return: {attempts} failed attempts in a row, {due} (last error: {error[:60]})")
    say(
        f"back -> first post {first - back_at:6.2f} s; back -> all {len(arrivals)}: "
        f"{last - back_at:6.2f} s; first -> last post {last - first:6.2f} s "
        f"({len(arrivals) / max(last - first, 1e-9):.0f} deliveries/s to it)"
    )

    def kinds(backlog: dict[str, float]) -> str:
        return ", ".join(f"{kind} {value:.0f}" for kind, value in sorted(backlog.items()))

    say(
        f"images_delivery_backlog: before {kinds(before)}; at its return {kinds(at_return)}; "
        f"after {kinds(after)}"
    )
    say("  (the dead receiver's events stay in the webhook backlog throughout)")


if __name__ == "__main__":
    main()
