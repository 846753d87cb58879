"""API.md §10: ``movestorage`` and ``checkstorage``, against a real S3 store (SeaweedFS)."""

from __future__ import annotations

import hashlib

import pytest
from django.core.management import CommandError, call_command

from conftest import png_bytes
from images import storage
from images.models import Image
from images.tests.test_storage import noise_png, object_bytes, objects_in, s3

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/collections/images?deviceId=move&timestamp=2024-06-0{day}T00:00:00Z"


def upload_some(client, count: int) -> list[dict]:
    metas = []
    for day in range(1, count + 1):
        data = noise_png(620, seed=day) if day == 1 else png_bytes(size=(40, 30), seed=day)
        response = client.post(URL.format(day=day), data, content_type="image/png")
        assert response.status_code == 201
        metas.append(response.json())
    return metas


def downloads(client, metas: list[dict]) -> list[str]:
    def body(response) -> bytes:
        if response.streaming:
            return b"".join(response.streaming_content)
        return response.content

    return [hashlib.sha256(body(client.get(meta["href"]))).hexdigest() for meta in metas]


def test_images_move_from_the_database_to_a_bucket_and_back(client, settings, s3_storage):
    settings.IMAGES_STORAGE = "db"
    metas = upload_some(client, 4)
    assert downloads(client, metas) == [meta["sha256"] for meta in metas]

    call_command("movestorage", to=s3_storage)
    rows = Image.objects.all()
    assert all(row.location.startswith(s3_storage) and bytes(row.data) == b"" for row in rows)
    assert len(objects_in(s3_storage)) == 4
    # Still set to "db": rows say where their bytes are, so nothing is lost
    # before the operator switches IMAGES_STORAGE.
    assert downloads(client, metas) == [meta["sha256"] for meta in metas]
    settings.IMAGES_STORAGE = s3_storage
    assert downloads(client, metas) == [meta["sha256"] for meta in metas]

    call_command("movestorage", to="db")
    assert all(row.location == "" for row in Image.objects.all())
    assert objects_in(s3_storage) == []
    assert downloads(client, metas) == [meta["sha256"] for meta in metas]


def test_a_second_move_has_nothing_left_to_do(client, settings, s3_storage, capsys):
    settings.IMAGES_STORAGE = "db"
    upload_some(client, 2)
    call_command("movestorage", to=s3_storage)
    capsys.readouterr()
    call_command("movestorage", to=s3_storage)
    assert "moved 0 images" in capsys.readouterr().out


def test_a_move_to_an_unreachable_store_stops_cleanly_and_loses_nothing(
    client, settings, s3_storage
):
    settings.IMAGES_STORAGE = "db"
    metas = upload_some(client, 2)
    settings.S3_ENDPOINT_URL = "http://127.0.0.1:9"
    settings.S3_TIMEOUT = 1
    with pytest.raises(CommandError, match="run the command again"):
        call_command("movestorage", to=s3_storage)
    assert all(row.location == "" for row in Image.objects.all())
    assert downloads(client, metas) == [meta["sha256"] for meta in metas]


def test_checkstorage_finds_missing_and_wrong_bytes_and_orphans(client, s3_storage, capsys):
    metas = upload_some(client, 3)
    rows = {str(row.id): row for row in Image.objects.all()}
    call_command("checkstorage")
    assert "storage is consistent" in capsys.readouterr().out

    missing, changed, _ = (rows[meta["id"]] for meta in metas)
    bucket, key = storage.split_location(missing.location)
    s3().delete_object(Bucket=bucket, Key=key)
    bucket, key = storage.split_location(changed.location)
    s3().put_object(Bucket=bucket, Key=key, Body=b"not the image")
    orphan_key = storage.Bucket.parse(s3_storage).prefix + "left-by-a-crash"
    s3().put_object(Bucket=bucket, Key=orphan_key, Body=b"orphan")

    with pytest.raises(CommandError, match="3 problems found"):
        call_command("checkstorage", grace=0)
    out = capsys.readouterr().out
    assert f"image {missing.id}: its object is missing" in out
    assert f"image {changed.id}: damaged" in out
    assert f"an object with no row (s3://{bucket}/{orphan_key})" in out

    with pytest.raises(CommandError, match="2 problems found"):
        call_command("checkstorage", grace=0, repair=True)
    assert orphan_key not in objects_in(s3_storage)
    assert object_bytes(rows[metas[2]["id"]].location)  # the sound image is untouched


def test_a_young_object_may_be_an_upload_in_flight_and_is_left_alone(client, s3_storage):
    upload_some(client, 1)
    bucket = storage.Bucket.parse(s3_storage)
    s3().put_object(Bucket=bucket.name, Key=bucket.prefix + "in-flight", Body=b"x")
    call_command("checkstorage", repair=True)
    assert bucket.prefix + "in-flight" in objects_in(s3_storage)
