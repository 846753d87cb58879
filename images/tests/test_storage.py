"""API.md §10: where image bytes live (the database row or a real S3 store), and what that keeps.

Every test here that uses ``image_storage`` runs twice: with the bytes in
the database and in a bucket of a real SeaweedFS server.
"""

from __future__ import annotations

import hashlib
import io
import os

import boto3
import pytest
from django.core.management import call_command
from django.db import IntegrityError
from PIL import Image as PILImage

from conftest import png_bytes
from images import storage
from images.models import Image

pytestmark = pytest.mark.django_db

URL = "/collections/images?deviceId={device}&timestamp=2024-05-01T00:00:00Z"


def noise_png(side: int, seed: int = 0) -> bytes:
    """A PNG of random pixels: incompressible, so about 3 * side * side bytes."""
    pixels = hashlib.shake_256(f"noise{seed}".encode()).digest(side * side * 3)
    out = io.BytesIO()
    PILImage.frombytes("RGB", (side, side), pixels).save(out, "PNG", compress_level=0)
    return out.getvalue()


def upload(client, data: bytes, device: str = "cam") -> dict:
    response = client.post(URL.format(device=device), data, content_type="image/png")
    assert response.status_code == 201, response.content
    return response.json()


def s3():
    return boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"], region_name="us-east-1")


def object_bytes(location: str) -> bytes:
    bucket, key = storage.split_location(location)
    return s3().get_object(Bucket=bucket, Key=key)["Body"].read()


def objects_in(url: str) -> list[str]:
    bucket = storage.Bucket.parse(url)
    listed = s3().list_objects_v2(Bucket=bucket.name, Prefix=bucket.prefix)
    return [entry["Key"] for entry in listed.get("Contents", [])]


def streamed(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_in_a_bucket_the_row_holds_metadata_only_and_one_object_the_bytes(client, s3_storage):
    sent = png_bytes(size=(80, 60), seed=1)
    meta = upload(client, sent)
    row = Image.objects.get(id=meta["id"])
    assert row.location.startswith(s3_storage + "/")
    assert bytes(row.data) == b""
    assert object_bytes(row.location) == client.get(meta["href"]).content
    assert hashlib.sha256(object_bytes(row.location)).hexdigest() == meta["sha256"]
    assert len(objects_in(s3_storage)) == 1


def test_in_the_database_the_row_holds_the_bytes(client, settings):
    settings.IMAGES_STORAGE = "db"
    meta = upload(client, png_bytes(seed=2))
    row = Image.objects.get(id=meta["id"])
    assert row.location == ""
    assert hashlib.sha256(bytes(row.data)).hexdigest() == meta["sha256"]


def test_a_large_image_streams_whole_and_by_range(client, image_storage):
    sent = noise_png(700)  # about 1.5 MB: above the whole-read threshold
    assert len(sent) > storage.WHOLE_READ_BYTES
    meta = upload(client, sent, device="big")
    whole = client.get(meta["href"])
    assert whole.streaming
    assert int(whole["Content-Length"]) == meta["storedSize"]
    body = streamed(whole)
    assert hashlib.sha256(body).hexdigest() == meta["sha256"]
    part = client.get(meta["href"], HTTP_RANGE="bytes=1048570-1048589")
    assert part.status_code == 206
    assert part["Content-Range"] == f"bytes 1048570-1048589/{meta['storedSize']}"
    assert streamed(part) == body[1048570:1048590]
    parts = client.get(meta["href"], HTTP_RANGE="bytes=0-3,-4")
    assert parts.status_code == 206
    multipart = streamed(parts)
    assert int(parts["Content-Length"]) == len(multipart)
    assert body[:4] in multipart
    assert body[-4:] in multipart
    head = client.head(meta["href"])
    assert head["Content-Length"] == str(meta["storedSize"])
    assert streamed(head) == b""


@pytest.mark.django_db(transaction=True)  # the object goes once the deletion commits
def test_a_delete_removes_the_object_too(client, s3_storage):
    meta = upload(client, png_bytes(seed=3))
    assert len(objects_in(s3_storage)) == 1
    assert client.delete(meta["href"]).status_code == 204
    assert objects_in(s3_storage) == []
    assert client.get(meta["href"]).status_code == 404


def test_a_row_that_does_not_commit_leaves_no_object_behind(client, s3_storage):
    meta = upload(client, png_bytes(seed=4))
    stored = Image.objects.defer("data").get(id=meta["id"])
    # Same device and timestamp: the unique constraint refuses the row
    # after its object was written, as when two uploads race.
    twin = Image(
        device_id=stored.device_id,
        timestamp=stored.timestamp,
        content_type="image/png",
        width=1,
        height=1,
        original_size=3,
        stored_size=3,
        sha256=hashlib.sha256(b"abc").hexdigest(),
        original_sha256=hashlib.sha256(b"abc").hexdigest(),
    )
    with pytest.raises(IntegrityError):
        storage.image_save(twin, b"abc")
    assert objects_in(s3_storage) == [storage.split_location(stored.location)[1]]


def test_compacting_replaces_the_object_and_drops_the_old_one(client, settings, image_storage):
    settings.IMAGES_OPTIMIZE = "deferred"
    image = PILImage.open(io.BytesIO(png_bytes(size=(160, 120), seed=5))).convert("RGB")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    sent = out.getvalue()
    response = client.post(URL.format(device="jpg"), sent, content_type="image/jpeg")
    meta = response.json()
    assert meta["optimized"] is True  # final at once; compacted in the background (API.md §14)
    call_command("optimize", nice=0)
    row = Image.objects.get(id=meta["id"])
    assert row.optimized
    assert row.at_rest_size < row.stored_size == len(sent)  # held as JPEG XL
    served = client.get(meta["href"]).content
    assert served == sent
    assert hashlib.sha256(served).hexdigest() == row.sha256 == meta["sha256"]
    assert client.get(meta["href"], HTTP_ACCEPT="application/json").json()["optimized"] is True
    if image_storage != "db":
        assert objects_in(image_storage) == [storage.split_location(row.location)[1]]


def test_an_unreachable_store_is_a_503_with_retry_after_and_stores_nothing(
    client, settings, s3_storage, unused_tcp_port
):
    kept = upload(client, png_bytes(seed=6), device="before")
    settings.S3_ENDPOINT_URL = f"http://127.0.0.1:{unused_tcp_port}"
    settings.S3_TIMEOUT = 1
    response = client.post(URL.format(device="during"), png_bytes(seed=7), content_type="image/png")
    assert response.status_code == 503
    assert int(response["Retry-After"]) > 0
    assert "errors" in response.json()
    assert not Image.objects.filter(device_id="during").exists()
    download = client.get(kept["href"])
    assert download.status_code == 503
    assert int(download["Retry-After"]) > 0
    # Revalidation needs no bytes, so it still works.
    assert client.get(kept["href"], HTTP_IF_NONE_MATCH=f'"{kept["sha256"]}"').status_code == 304
    health = client.get("/healthz")
    assert health.status_code == 503
    assert health.json()["storage"] == "unavailable"


@pytest.fixture
def unused_tcp_port() -> int:
    from conftest import free_port

    return free_port()


def test_healthz_names_the_store_when_it_answers(client, image_storage):
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json()["storage"] == ("db" if image_storage == "db" else "s3")
