"""API.md §10 over CoAP: images in an S3 bucket, deferred optimization, truthful Max-Age."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from aiocoap import GET, POST
from aiocoap.numbers.codes import Code
from PIL import Image as PILImage

from conftest import ROOT, make_bucket, png_bytes
from images.tests.conftest_coap import LiveCoap, noise_png, start_runcoap
from images.tests.test_coap_aiocoap import Client

YEAR = 31_536_000


@pytest.fixture(scope="module")
def bucket_env(object_store) -> dict[str, str]:
    return object_store.environment(make_bucket(object_store), "coap")


@pytest.fixture(scope="module")
def server(tmp_path_factory, bucket_env) -> Iterator[LiveCoap]:
    live = start_runcoap(
        tmp_path_factory.mktemp("runcoap-s3"), {**bucket_env, "IMAGES_OPTIMIZE": "deferred"}
    )
    yield live
    live.stop()


@pytest.fixture(scope="module")
def coap(server: LiveCoap) -> Iterator[Client]:
    client = Client(server)
    yield client
    client.close()


def optimize(server: LiveCoap, bucket_env: dict[str, str]) -> None:
    env = {**os.environ, **bucket_env, "DATABASE_URL": server.database_url}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    subprocess.run(
        [sys.executable, "manage.py", "optimize", "--nice", "0"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )


def test_a_jpeg_is_final_at_once_and_held_as_jpeg_xl_later(coap, server, bucket_env):
    image = PILImage.open(io.BytesIO(png_bytes(size=(160, 120), seed=8))).convert("RGB")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=92)
    query = {"deviceId": "coap-s3", "timestamp": "2024-07-01T00:00:00Z"}
    created = coap.request(
        POST, "/collections/images", out.getvalue(), query=query, content_format=22
    )
    assert created.code == Code.CREATED
    path = "/" + "/".join(created.opt.location_path)

    before = coap.request(GET, path)
    assert before.code == Code.CONTENT
    # API.md §14: the served bytes are the upload's, final from the first answer.
    assert before.opt.max_age == YEAR
    assert before.payload == out.getvalue()

    optimize(server, bucket_env)
    after = coap.request(GET, path)
    assert after.opt.max_age == YEAR
    # Held as JPEG XL now, served as sent: the same bytes and ETag (API.md §12).
    assert after.opt.etag == before.opt.etag
    assert after.payload == out.getvalue()
    location, held, served = server.query(
        "SELECT location, at_rest_size, stored_size FROM images_image"
    )[0]
    assert location.startswith(bucket_env["IMAGES_STORAGE"])
    assert held < served


def test_a_large_image_in_the_bucket_comes_back_block_wise(coap, server):
    sent = noise_png(400)  # about 480 KB: hundreds of blocks each way
    query = {"deviceId": "coap-s3-big", "timestamp": "2024-07-02T00:00:00Z"}
    created = coap.request(POST, "/collections/images", sent, query=query, content_format=23)
    assert created.code == Code.CREATED
    response = coap.request(GET, "/collections/images", query=query)
    assert response.code == Code.CONTENT
    assert hashlib.sha256(response.payload).hexdigest() == hashlib.sha256(sent).hexdigest()
    rows = server.query(
        "SELECT length(data), location FROM images_image WHERE device_id = ?", ("coap-s3-big",)
    )
    assert rows[0][0] == 0
    assert rows[0][1].startswith("s3://")
