"""One operation of ``bench/hostile.py``, measured in a fresh process against one source tree.

Usage (by bench/hostile.py): python bench/hostile_child.py TREE OP [ARGS...]

The tree's ``images`` and ``config`` are imported (its directory first on
``sys.path``), on the SQLite database the environment names, migrated here.
What the operation needs is set up first, unmeasured (an upload before a
thumbnail, 50,000 rows before a replay); then the line ``START`` is printed
(the parent's timeout counts from it), the operation runs, and one line
``RESULT {json}`` reports:

- ``cpu``: CPU seconds, user + system, of every thread of this process
  (``time.process_time``) and of its child processes during the operation
  (mozjpeg's, live ones from /proc, ended ones from ``getrusage``);
- ``wall``: seconds of wall time;
- ``peak``: this process's peak resident set during the operation, MiB
  (``VmHWM`` after ``/proc/self/clear_refs``; the whole process's
  ``ru_maxrss`` where that is not allowed), and ``base``, its RSS before;
- ``outcome``: what the service answered, in a few words.

OPs: ``upload PATH TYPE``; ``background PATH TYPE`` (one ``optimize``
pass after the upload); ``thumbnail PATH TYPE [written]`` (the first 256 px
WebP after the upload, or after writing the image's row directly);
``import PATH`` (``importimages``); ``replay ROWS BACK`` (``Last-Event-ID``
replays on every device's stream from the image ``BACK`` places from the
newest, in a table of ``ROWS`` images).
"""

from __future__ import annotations

import gc
import inspect
import io
import json
import os
import resource
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # bench/ first would shadow the standard library (bench/http.py)
from bench import support  # noqa: E402  (this checkout's helpers, before the tree's code)

URL = "/collections/images?deviceId=hostile&timestamp=2024-09-01T00:00:00Z"
REPEAT = 5  # replays measured together


def _descendants_cpu() -> dict[int, float]:
    return {pid: support.process_cpu(pid) for pid in support.descendants(os.getpid())}


def measured(operation: Callable[[], str]) -> dict[str, object]:
    """Run ``operation`` (which returns its outcome) and measure it; see the module docstring."""
    gc.collect()
    base = support.rss_mib("self")
    peak_reset = support.reset_peak()
    live, ended = _descendants_cpu(), support.children_cpu()
    print("START", flush=True)
    wall, cpu = time.perf_counter(), time.process_time()
    outcome = operation()
    cpu = time.process_time() - cpu + support.children_cpu() - ended
    cpu += sum(seconds - live.get(pid, 0.0) for pid, seconds in _descendants_cpu().items())
    wall = time.perf_counter() - wall
    if peak_reset:
        peak = support.rss_mib("self", "VmHWM")
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"cpu": cpu, "wall": wall, "peak": peak, "base": base, "outcome": outcome}


def _said(response: object) -> str:
    """An answer in a few words: status and error message, or what was stored."""
    status = response.status_code  # type: ignore[attr-defined]
    if status >= 400:
        try:
            errors = response.json()["errors"]  # type: ignore[attr-defined]
            message = next(iter(errors.values()))[0]
        except (ValueError, KeyError, StopIteration, IndexError):
            message = ""
        return f"{status} {message}".strip()
    if response.get("Content-Type", "").startswith("application/json"):  # type: ignore[attr-defined]
        body = response.json()  # type: ignore[attr-defined]
        return f"{status} stored {body['storedSize']:,} B {body['contentType']}"
    return f"{status} {len(response.content):,} B {response['Content-Type']}"  # type: ignore[attr-defined]


def _upload(client: object, path: Path, content_type: str) -> object:
    return client.post(URL, data=path.read_bytes(), content_type=content_type)  # type: ignore[attr-defined]


def _stored(client: object, path: Path, content_type: str) -> str | None:
    """Upload (unmeasured); the image's id, or None (then the outcome says why)."""
    response = _upload(client, path, content_type)
    if response.status_code not in (200, 201):  # type: ignore[attr-defined]
        print("RESULT " + json.dumps({"outcome": "not stored: " + _said(response)}), flush=True)
        return None
    return response.json()["id"]  # type: ignore[attr-defined]


def op_upload(path: str, content_type: str) -> dict[str, object]:
    from django.test import Client

    client = Client()
    return measured(lambda: _said(_upload(client, Path(path), content_type)))


def op_background(path: str, content_type: str) -> dict[str, object] | None:
    from django.core.management import call_command
    from django.test import Client

    if _stored(Client(), Path(path), content_type) is None:
        return None

    def optimize() -> str:
        out = io.StringIO()
        call_command("optimize", "--nice", "0", stdout=out, stderr=out)
        return "; ".join(line for line in out.getvalue().splitlines() if line)[:160]

    return measured(optimize)


def _written(path: Path, content_type: str) -> str:
    """Store ``path`` as received by writing its row directly (no upload, so no check).

    As an image stored before a limit existed (or by the tree before the
    fixes, which took it): what a thumbnail costs for such a row.
    """
    import hashlib

    from PIL import Image as Picture

    from images.models import Image

    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    with Picture.open(path) as picture:
        width, height = picture.size
    size = len(data)
    image = Image.objects.create(
        **dict(device_id="hostile", timestamp="2024-09-01T00:00:00Z", content_type=content_type),
        **dict(width=width, height=height, sha256=digest, original_sha256=digest),
        **dict(original_size=size, stored_size=size, at_rest_size=size, data=data),
    )
    return str(image.id)


def op_thumbnail(path: str, content_type: str, how: str = "upload") -> dict[str, object] | None:
    from django.test import Client

    client = Client()
    if how == "written":
        image_id: str | None = _written(Path(path), content_type)
    else:
        image_id = _stored(client, Path(path), content_type)
    if image_id is None:
        return None
    url = f"/collections/images/{image_id}/thumbnail?size=256"
    return measured(lambda: _said(client.get(url, HTTP_ACCEPT="image/webp")))


def op_import(path: str) -> dict[str, object]:
    from django.core.management import call_command
    from django.core.management.base import CommandError

    def run() -> str:
        out, err = io.StringIO(), io.StringIO()
        try:
            call_command("importimages", path, stdout=out, stderr=err)
            return out.getvalue().strip()
        except CommandError as exc:
            said = out.getvalue().strip()
            return f"{said + '; ' if said else ''}error: {exc}"[:200]
        except Exception as exc:  # the tree before the fixes stops with a traceback
            said = out.getvalue().strip()
            where = traceback.extract_tb(exc.__traceback__)[-1]
            return f"{said}traceback: {type(exc).__name__}: {exc} ({Path(where.filename).name})"

    return measured(run)


def _fill(rows: int) -> list[str]:
    """``rows`` images of ten devices, one millisecond apart; their ids, oldest first.

    Each row holds 4,000 bytes of image data, as a small image stored in the
    database does: a query that scans the table reads a page per row.
    """
    import datetime
    import uuid

    from images.models import Image

    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    ids = [uuid.uuid4() for _ in range(rows)]
    batch = []
    for index, key in enumerate(ids):
        at = start + datetime.timedelta(milliseconds=index)
        batch.append(
            Image(
                id=key,
                device_id=f"camera-{index % 10}",
                timestamp=at,
                received_at=at,
                modified_at=at,
                content_type="image/png",
                width=1,
                height=1,
                original_size=4000,
                stored_size=4000,
                data=bytes(4000),
                sha256="0" * 64,
                original_sha256="0" * 64,
            )
        )
    Image.objects.bulk_create(batch, batch_size=2000)
    return [str(key) for key in ids]


def op_replay(rows: str, back: str) -> dict[str, object]:
    import tracemalloc

    from django.db import connection

    from images import access
    from images.live import watch as live

    ids = _fill(int(rows))
    last_event_id = ids[-int(back) - 1]
    accepts_client = "client" in inspect.signature(live.watch_open).parameters
    extra = {"client": "bench"} if accepts_client else {}

    def replay(last: str = last_event_id) -> list[object]:
        stream = live.watch_open(access.ANONYMOUS, None, last_event_id=last, **extra)
        stream.subscribe()
        try:
            return stream.replay()
        finally:
            stream.unsubscribe()

    # The hub starts and hears its channel, the serializers are built: once
    # per process, not a replay's cost. Then REPEAT replays, figures per replay.
    replay(ids[-2])
    counts: list[int] = []
    result = measured(lambda: str(counts.extend(len(replay()) for _ in range(REPEAT))))
    for name in ("cpu", "wall"):
        result[name] /= REPEAT  # type: ignore[operator]
    result["outcome"] = f"{counts[0]:,} events (per replay: mean of {REPEAT})"
    # Again, unmeasured, to see what it read: its query plan, SQLite's virtual
    # machine steps (a proxy for rows read) and the memory it allocated.
    statements: list[tuple[str, object]] = []

    def record(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        statements.append((sql, params))
        return execute(sql, params, many, context)

    steps = [0]

    def step() -> int:
        steps[0] += 1
        return 0

    connection.ensure_connection()
    connection.connection.set_progress_handler(step, 1000)
    tracemalloc.start()
    with connection.execute_wrapper(record):
        replay()
    allocated = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    connection.connection.set_progress_handler(None, 0)
    ordered = 'ORDER BY "images_image"."received_at"'
    sql, params = next((s, p) for s, p in statements if ordered in s)
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
        plan = "; ".join(row[-1] for row in cursor.fetchall())
    counted = f"{steps[0]:,}k" if steps[0] else "under 1k"
    result["outcome"] += (
        f"; {counted} SQLite VM steps; {allocated / 1024:,.0f} KiB allocated; plan: {plan}"
    )
    return result


def main() -> None:
    tree, op, *args = sys.argv[1:]
    sys.path.insert(0, tree)
    os.chdir(tree)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    result = {
        "upload": op_upload,
        "background": op_background,
        "thumbnail": op_thumbnail,
        "import": op_import,
        "replay": op_replay,
    }[op](*args)
    if result is not None:
        print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
