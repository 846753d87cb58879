"""API.md §15 "Archives": ``importimages`` against hostile tar files, built here with tarfile.

Each bad member is reported by name and the import goes on; sizes are
judged from member headers before anything is read; members that never
find their pair, extended headers and compression bombs are bounded.
"""

from __future__ import annotations

import bz2
import io
import json
import tarfile
import tracemalloc

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from conftest import png_bytes
from images.lifecycle.tarball import TarballUnreadable, tarball_import
from images.models import Image

pytestmark = pytest.mark.django_db


def metadata(day: int, **fields: object) -> bytes:
    return json.dumps(
        {"deviceId": "hostile", "timestamp": f"2024-11-{day:02d}T00:00:00Z", **fields}
    ).encode()


def add(tar: tarfile.TarFile, name: str, data: bytes, *, size: int | None = None) -> None:
    member = tarfile.TarInfo(name)
    member.size = len(data) if size is None else size
    tar.addfile(member, io.BytesIO(data))


def write(path, members: list[tuple[str, bytes]], mode: str = "w") -> None:
    with tarfile.open(path, mode, format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            add(tar, name, data)


def import_(path, capsys) -> tuple[str, str, bool]:
    """What the command printed, its errors (the final one included), whether it failed."""
    final = ""
    try:
        call_command("importimages", str(path))
    except CommandError as exc:
        final = str(exc)
    out = capsys.readouterr()
    return out.out, out.err + final, bool(final)


def pair(day: int, **fields: object) -> list[tuple[str, bytes]]:
    name = f"hostile_{day:02d}.png"
    return [(name, png_bytes(seed=day)), (f"{name}.json", metadata(day, **fields))]


@pytest.mark.parametrize("bad", [[1], "big", 10**30, -1, True, 1.5])
def test_a_bad_original_size_is_reported_by_name_and_the_rest_imported(tmp_path, capsys, bad):
    path = tmp_path / "bad.tar"
    write(path, [*pair(1, originalSize=bad), *pair(2, originalSize=99)])
    out, err, failed = import_(path, capsys)
    assert failed
    assert "hostile_01.png: bad metadata: originalSize must be an integer" in err
    assert "imported 1" in out
    assert Image.objects.filter(timestamp__day=2).exists()


def test_metadata_that_is_not_an_object_or_has_a_bad_sha256_is_reported(tmp_path, capsys):
    path = tmp_path / "odd.tar"
    image = png_bytes(seed=3)
    write(
        path,
        [
            ("a.png", image),
            ("a.png.json", b"[1, 2, 3]"),
            ("b.png", image),
            ("b.png.json", metadata(4, sha256=["not", "a", "hash"])),
            *pair(5),
        ],
    )
    out, err, failed = import_(path, capsys)
    assert failed
    assert "a.png: bad metadata: its metadata is not a JSON object" in err
    assert "b.png: bad metadata: sha256 must be 64 lowercase hex digits" in err
    assert "imported 1" in out


def test_a_member_over_its_limit_is_refused_from_its_header(tmp_path, capsys, settings):
    settings.IMAGES_MAX_BYTES = 10_000
    path = tmp_path / "large.tar"
    write(
        path,
        [
            ("big.png", bytes(20_000)),
            ("big.png.json", metadata(6)),
            ("meta.png", png_bytes(seed=6)),
            ("meta.png.json", b" " * ((1 << 20) + 1)),
            *pair(7),
        ],
    )
    out, err, failed = import_(path, capsys)
    assert failed
    assert "big.png: 20,000 bytes; the limit is 10,000" in err
    assert "meta.png.json: 1,048,577 bytes; the limit is 1,048,576" in err
    assert "imported 1" in out
    # Each refused member is reported once: its pair is let go unsaid.
    assert err.count("big.png") == 1
    assert err.count("meta.png") == 1


def test_members_that_never_find_their_pair_are_let_go_not_held(tmp_path, capsys):
    path = tmp_path / "unpaired.tar"
    lonely = [(f"lonely_{index:03d}.png", png_bytes(seed=index)) for index in range(40)]
    write(path, [*lonely, *pair(8)])
    out, err, failed = import_(path, capsys)
    assert failed
    assert err.count("no metadata member") == 40  # let go on the way, or named at the end
    assert "imported 1" in out


def test_a_compression_bomb_stops_before_it_is_unpacked(tmp_path, capsys):
    path = tmp_path / "bomb.tar.gz"
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name, data in pair(9):
            add(tar, name, data)
        add(tar, "bomb.png", bytes(200 << 20))  # 200 MiB of zeros: about 200 KB packed
    assert path.stat().st_size < 2 << 20
    out, err, failed = import_(path, capsys)
    assert failed
    assert "decompression bomb" in err
    assert Image.objects.filter(timestamp__day=9).exists()  # what came before is kept


def test_a_bzip2_bomb_is_unpacked_a_piece_at_a_time(tmp_path):
    """128 MiB of zeros in a few hundred bytes of bzip2: tarfile's "r|bz2" unpacked it at once."""
    path = tmp_path / "bomb.tar.bz2"
    member = tarfile.TarInfo("bomb.png")
    member.size = 128 << 20
    packer = bz2.BZ2Compressor(9)
    with path.open("wb") as out:
        out.write(packer.compress(member.tobuf(format=tarfile.USTAR_FORMAT)))
        for _ in range(8):
            out.write(packer.compress(bytes(16 << 20)))
        out.write(packer.compress(bytes(2 * tarfile.BLOCKSIZE)) + packer.flush())
    assert path.stat().st_size < 1000
    tracemalloc.start()
    try:
        with path.open("rb") as stream, pytest.raises(TarballUnreadable, match="bomb"):
            tarball_import(stream)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20  # 128 MiB and more before


def test_an_oversized_extended_header_is_refused_before_it_is_read(tmp_path, capsys):
    path = tmp_path / "pax.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in pair(10):
            add(tar, name, data)
        member = tarfile.TarInfo("x.png")
        member.pax_headers = {"comment": "x" * (2 << 20)}
        tar.addfile(member, io.BytesIO(b""))
    out, err, failed = import_(path, capsys)
    assert failed
    assert "extended header" in err
    assert Image.objects.filter(timestamp__day=10).exists()


@hypothesis_settings(max_examples=60, deadline=5000, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=6000), st.integers(0, 3))
def test_any_bytes_are_a_report_or_unreadable_never_another_error(data, spliced):
    """Fuzzing the tar reader: for every input, a report or TarballUnreadable, in bounded time."""
    whole = io.BytesIO()
    with tarfile.open(fileobj=whole, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, member in pair(20)[:spliced]:
            add(tar, name, member)
    stream = io.BytesIO(whole.getvalue()[: len(whole.getvalue()) // 2] + data)
    try:
        report = tarball_import(stream)
    except TarballUnreadable:
        return
    assert all(isinstance(name, str) and isinstance(what, str) for name, what in report.problems)
