"""API.md §15 "Archives": metadata members are checked as they are read; only a small record waits.

1 MiB of ``[{},{},...]`` parses to about 30 MB of Python objects; an
archive of 40 such members (43 KB as .tar.gz) took 534 MiB when each was
held parsed while it waited for its image. Now a metadata member over
1 MiB is refused from its header, and one under it is parsed, checked and
dropped at once: what waits for its pair is a :class:`Record`, counted
against the waiting caps with the bytes it holds.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile

import pytest

from conftest import ROOT, fresh_database_url, png_bytes, query_database
from images.lifecycle import tarball_pairs
from images.lifecycle.tarball_pairs import Record, Waiting, metadata_record
from images.models import Image
from images.tests.test_tarball_hostile import add, import_, metadata, pair, write

pytestmark = pytest.mark.django_db

MIB = 1 << 20


def objects(size: int) -> bytes:
    """A JSON list of empty objects of just under ``size`` bytes, as bench/hostile_inputs.py."""
    body = b"[" + b"{}," * (size // 3 - 1)
    return body[:-1] + b"]"


def test_bad_metadata_is_reported_at_once_and_the_valid_pairs_around_it_imported(tmp_path, capsys):
    path = tmp_path / "mixed.tar"
    image = png_bytes(seed=40)
    write(
        path,
        [
            *pair(1),
            ("list.png", image),
            ("list.png.json", objects(60 << 10)),  # under the limit, not an object
            ("deep.png.json", b"[" * (60 << 10)),  # deeper than Python's stack
            ("nokey.png", image),
            ("nokey.png.json", b'{"timestamp": "2024-11-03T00:00:00Z"}'),
            ("big.png.json", objects(MIB)),
            ("big.png", image),  # after its refused metadata: let go unreported
            *reversed(pair(2)),  # metadata first, then its image
            *pair(3),
        ],
    )
    out, err, failed = import_(path, capsys)
    assert failed
    assert "list.png: bad metadata: its metadata is not a JSON object" in err
    assert "deep.png: bad metadata: not valid JSON" in err
    assert "nokey.png: bad metadata: deviceId: This field is required." in err
    assert "big.png: bad metadata: its metadata is not a JSON object" in err
    assert "imported 3, already there 0, problems 4" in out
    assert sorted(Image.objects.values_list("timestamp__day", flat=True)) == [1, 2, 3]


def test_metadata_yields_a_small_record_not_the_document():
    record = metadata_record(
        metadata(4, originalSize=99, sha256="ab" * 32, id="x", href="/y", extra=[{}] * 1000)
    )
    assert record == Record("hostile", record.timestamp, "ab" * 32, 99)
    assert record.timestamp.day == 4


def test_the_waiting_caps_count_every_member_and_the_bytes_it_holds(monkeypatch):
    refused: list[tuple[str, str]] = []
    waiting = Waiting(lambda name, why: refused.append((name, why)))
    record = metadata_record(metadata(5))
    for index in range(100):
        assert waiting.metadata(f"lonely_{index:03d}.png", record) is None
    assert len(refused) == 100 - tarball_pairs.WAITING_MAX_MEMBERS
    assert refused[0] == ("lonely_000.png.json", "no image member next to it")
    assert waiting.bytes < tarball_pairs.WAITING_MAX_MEMBERS * 1024  # records, not documents
    # By bytes: spooled images let go, oldest first, past the byte cap.
    monkeypatch.setattr(tarball_pairs, "WAITING_MAX_BYTES", 40_000)
    refused.clear()
    waiting = Waiting(lambda name, why: refused.append((name, why)))
    for index in range(3):
        waiting.image(f"image_{index}.png", io.BytesIO(bytes(15_000)))
    assert 30_000 < waiting.bytes <= 40_000
    assert len(refused) == 1
    assert ("image_0.png", "no metadata member next to it") in refused
    assert waiting.metadata("image_2.png", record) is not None  # the newest still pairs
    assert waiting.leftovers()[-1] == ("image_1.png", "no metadata member")


PEAK = """
import sys
import django
django.setup()
from django.core.management import call_command
from django.core.management.base import CommandError
try:
    call_command("importimages", sys.argv[1])
except CommandError as exc:
    print(exc, file=sys.stderr)
# VmHWM, this process's own high-water mark: ru_maxrss would also count the
# parent's RSS at the fork (Linux keeps it across exec), the test runner's.
with open("/proc/self/status") as status:
    peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print("PEAK", peak // 1024)
"""


def import_measured(path, database_url: str) -> tuple[subprocess.CompletedProcess, int]:
    """``importimages`` in a process of its own; what it said, and its peak RSS in MiB."""
    env = {**os.environ, "DATABASE_URL": database_url, "DJANGO_SETTINGS_MODULE": "config.settings"}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    done = subprocess.run(
        [sys.executable, "-c", PEAK, str(path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "PEAK" in done.stdout, done.stderr
    return done, int(done.stdout.rsplit("PEAK", 1)[1])


def test_forty_metadata_members_of_a_mebibyte_are_refused_in_bounded_memory(tmp_path):
    """bench/hostile.py's archive (534 MiB before), with pairs among its members."""
    path = tmp_path / "objects.tar.gz"
    body = objects(MIB)
    with tarfile.open(path, "w:gz", compresslevel=9) as tar:
        for index in range(40):
            add(tar, f"objects_{index:03d}.png.json", body)
            if index % 20 == 0:
                for name, data in pair(index // 20 + 1):
                    add(tar, name, data)
    assert path.stat().st_size < 100_000
    database = fresh_database_url(tmp_path)

    done, peak = import_measured(path, database)

    for index in range(40):
        said = f"objects_{index:03d}.png: bad metadata: its metadata is not a JSON object"
        assert said in done.stderr
    assert "imported 2, already there 0, problems 40" in done.stdout
    assert query_database(database, "SELECT count(*) FROM images_image") == [(2,)]
    assert peak < 200, f"peak RSS {peak} MiB; API.md §15 promises under 200"
