"""API.md §11: export (HTTP and ``exportimages``) and ``importimages``, read back with tarfile."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile

import pytest
from django.core.management import call_command

from conftest import ROOT, fresh_database_url, png_bytes, query_database
from images.models import Image, Token
from images.tokens import token_issue

pytestmark = pytest.mark.django_db

URL = "/collections/images?deviceId={device}&timestamp=2024-09-{day:02d}T10:00:00Z"


def upload(client, device: str, day: int, **extra) -> dict:
    data = png_bytes(size=(30, 20), seed=day * 7 + len(device))
    response = client.post(
        URL.format(device=device, day=day), data, content_type="image/png", **extra
    )
    assert response.status_code == 201, response.content
    return response.json()


def members(tarball: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(tarball)) as tar:
        return [(member.name, tar.extractfile(member).read()) for member in tar.getmembers()]


def exported(client, path: str, **extra):
    response = client.get(path, **extra)
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return response, body


def test_a_device_exports_as_a_tar_of_images_and_their_metadata_in_time_order(client):
    metas = [upload(client, "cam/1", day) for day in (3, 1, 2)]
    upload(client, "other", 1)
    response, body = exported(client, "/devices/cam%2F1/export")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-tar"
    assert response["Content-Disposition"].startswith('attachment; filename="cam_1.tar"')
    found = members(body)
    names = [name for name, _ in found]
    assert names == [
        "cam_1_20240901T100000Z.png",
        "cam_1_20240901T100000Z.png.json",
        "cam_1_20240902T100000Z.png",
        "cam_1_20240902T100000Z.png.json",
        "cam_1_20240903T100000Z.png",
        "cam_1_20240903T100000Z.png.json",
    ]
    by_id = {meta["id"]: meta for meta in metas}
    for (_, data), (_, metadata) in zip(found[::2], found[1::2], strict=True):
        meta = json.loads(metadata)
        assert meta == by_id[meta["id"]]
        assert hashlib.sha256(data).hexdigest() == meta["sha256"]
        assert meta["deviceId"] == "cam/1"


def test_an_export_takes_the_listings_from_and_to(client):
    for day in (1, 2, 3, 4):
        upload(client, "cam", day)
    _, body = exported(
        client, "/devices/cam/export?from=2024-09-02T00:00:00Z&to=2024-09-04T00:00:00Z"
    )
    assert [name for name, _ in members(body)][::2] == [
        "cam_20240902T100000Z.png",
        "cam_20240903T100000Z.png",
    ]
    response, _ = exported(client, "/devices/cam/export?from=yesterday")
    assert response.status_code == 400
    assert "from" in response.json()["errors"]


def test_an_unknown_device_is_a_404_in_the_contracts_format(client):
    response, _ = exported(client, "/devices/nobody/export")
    assert response.status_code == 404
    assert "errors" in response.json()


def test_in_token_mode_an_export_needs_a_reader_or_the_devices_own_token(client, settings):
    settings.IMAGES_AUTH = "token"
    _, device = token_issue(kind=Token.Kind.DEVICE, subject="cam")
    _, other = token_issue(kind=Token.Kind.DEVICE, subject="other")
    _, reader = token_issue(kind=Token.Kind.READER, subject="ml-pipeline")
    upload(client, "cam", 1, HTTP_AUTHORIZATION=f"Bearer {device}")
    assert exported(client, "/devices/cam/export")[0].status_code == 401
    assert (
        exported(client, "/devices/cam/export", HTTP_AUTHORIZATION=f"Bearer {other}")[0].status_code
        == 403
    )
    for token in (device, reader):
        response, body = exported(
            client, "/devices/cam/export", HTTP_AUTHORIZATION=f"Bearer {token}"
        )
        assert response.status_code == 200
        assert len(members(body)) == 2
        assert "private" in response["Cache-Control"]


def import_elsewhere(tarball_path, database_url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": database_url}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    return subprocess.run(
        [sys.executable, "manage.py", "importimages", str(tarball_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


ROWS = "SELECT device_id, timestamp, sha256, content_type, width, height FROM images_image"


def normalised(rows: list[tuple]) -> list[tuple]:
    return sorted((row[0], str(row[1])[:19], *row[2:]) for row in rows)


def test_export_then_import_elsewhere_gives_the_same_images_twice_over(client, tmp_path):
    for device, day in (("a", 1), ("a", 2), ("b/ü", 1), ("c", 5)):
        upload(client, device, day)
    tarball_path = tmp_path / "all.tar"
    call_command("exportimages", str(tarball_path))
    assert len(members(tarball_path.read_bytes())) == 8

    elsewhere = fresh_database_url(tmp_path)
    first = import_elsewhere(tarball_path, elsewhere)
    assert first.returncode == 0, first.stderr
    assert "imported 4, already there 0, problems 0" in first.stdout
    here = [
        (
            image.device_id,
            image.timestamp,
            image.sha256,
            image.content_type,
            image.width,
            image.height,
        )
        for image in Image.objects.all()
    ]
    assert normalised(query_database(elsewhere, ROWS)) == normalised(here)

    again = import_elsewhere(tarball_path, elsewhere)
    assert again.returncode == 0
    assert "imported 0, already there 4, problems 0" in again.stdout
    assert len(query_database(elsewhere, ROWS)) == 4


def test_a_conflict_and_a_bad_member_are_reported_by_name_and_the_rest_imported(client, tmp_path):
    upload(client, "cam", 1)
    upload(client, "cam", 2)
    tarball_path = tmp_path / "cam.tar"
    call_command("exportimages", str(tarball_path), device="cam")
    found = members(tarball_path.read_bytes())
    # Another installation already holds other bytes for day 1; day 2's
    # image member is damaged; a stray member has no metadata.
    elsewhere = fresh_database_url(tmp_path)
    import_elsewhere(tmp_path / "nothing.tar", elsewhere)  # migrates; the file does not exist
    damaged = tmp_path / "damaged.tar"
    with tarfile.open(damaged, "w") as tar:
        for name, data in found:
            if name == "cam_20240902T100000Z.png":
                data = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40
            add(tar, name, data)
        add(tar, "stray.png", png_bytes(seed=99))
    conflicting = json.loads(found[1][1])
    env_rows = query_database(elsewhere, "SELECT count(*) FROM images_image")
    assert env_rows == [(0,)]
    other_bytes = tmp_path / "other.tar"
    with tarfile.open(other_bytes, "w") as tar:
        image = png_bytes(size=(30, 20), seed=12345)
        meta = {**conflicting, "sha256": hashlib.sha256(image).hexdigest()}
        add(tar, found[0][0], image)
        add(tar, found[1][0], json.dumps(meta).encode())
    assert import_elsewhere(other_bytes, elsewhere).returncode == 0

    result = import_elsewhere(damaged, elsewhere)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "cam_20240901T100000Z.png: device 'cam' already stored a different image" in (
        result.stderr
    )
    assert "cam_20240902T100000Z.png:" in result.stderr
    assert "stray.png: no metadata member" in result.stderr
    stored = query_database(elsewhere, "SELECT sha256 FROM images_image")
    assert stored == [(hashlib.sha256(image).hexdigest(),)]  # the conflict left it untouched


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    member = tarfile.TarInfo(name)
    member.size = len(data)
    tar.addfile(member, io.BytesIO(data))


def test_a_truncated_or_foreign_file_stops_with_a_message_and_keeps_what_came_before(
    client, tmp_path
):
    for day in range(1, 9):
        upload(client, "cam", day)
    tarball_path = tmp_path / "cam.tar"
    call_command("exportimages", str(tarball_path), device="cam")
    whole = tarball_path.read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole[: len(whole) * 6 // 10])
    elsewhere = fresh_database_url(tmp_path)

    result = import_elsewhere(cut, elsewhere)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "run again on a whole file" in result.stderr
    kept = query_database(elsewhere, "SELECT count(*) FROM images_image")[0][0]
    assert 0 < kept < 8

    finished = import_elsewhere(tarball_path, elsewhere)
    assert finished.returncode == 0
    assert f"imported {8 - kept}, already there {kept}" in finished.stdout

    foreign = tmp_path / "notes.tar"
    foreign.write_text("not a tar archive at all\n" * 100)
    result = import_elsewhere(foreign, elsewhere)
    assert result.returncode == 1
    assert "not a complete tar archive" in result.stderr
    assert "Traceback" not in result.stderr


def test_devices_whose_safe_names_collide_stay_apart_in_one_tarball(client, tmp_path):
    first, second = upload(client, "a/b", 1), upload(client, "a_b", 1)
    tarball_path = tmp_path / "all.tar"
    call_command("exportimages", str(tarball_path))
    names = [name for name, _ in members(tarball_path.read_bytes())]
    assert names == [
        "a_b_20240901T100000Z.png",
        "a_b_20240901T100000Z.png.json",
        f"a_b_20240901T100000Z-{second['id']}.png",
        f"a_b_20240901T100000Z-{second['id']}.png.json",
    ]
    assert first["deviceId"] == "a/b"
