"""Request bodies read whole (JSON, CBOR) or spooled to a temporary file (raw images)."""

from __future__ import annotations

import io
import os

import pytest
from django.test import RequestFactory
from rest_framework.exceptions import ParseError

from formats.body import SPOOL_MEMORY_BYTES, read_body, spool_body


def context(body: bytes, announced: int) -> dict:
    request = RequestFactory().post("/", body, content_type="application/octet-stream")
    request.META["CONTENT_LENGTH"] = str(announced)
    return {"request": request}


class Trickle(io.RawIOBase):
    """A stream that hands out at most 1,000 bytes a read, as a socket may."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._data.read(min(size, 1000) if size >= 0 else 1000)


@pytest.mark.parametrize("length", [0, 1, 999, 70_000, SPOOL_MEMORY_BYTES + 12_345])
def test_a_body_arrives_whole_in_pieces(length):
    data = os.urandom(length)
    assert read_body(Trickle(data), context(data, length)) == data
    with spool_body(Trickle(data), context(data, length)) as spooled:
        assert spooled.tell() == 0
        assert spooled.read() == data


@pytest.mark.parametrize("reader", [read_body, spool_body])
def test_a_body_shorter_than_its_content_length_is_refused(reader):
    data = os.urandom(5000)
    with pytest.raises(ParseError, match="ended after 5000 of its 6000 bytes"):
        reader(Trickle(data), context(data, 6000))


@pytest.mark.parametrize("reader", [read_body, spool_body])
def test_bytes_past_the_content_length_are_not_read(reader):
    data = os.urandom(3000)
    stream = Trickle(data)
    body = reader(stream, context(data, 2500))
    content = body if isinstance(body, bytes) else body.read()
    assert content == data[:2500]
    assert stream.read(10_000) == data[2500:]


def test_a_spooled_body_lives_in_the_upload_directory(settings, tmp_path):
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path)
    data = os.urandom(SPOOL_MEMORY_BYTES + 1)
    with spool_body(Trickle(data), context(data, len(data))) as spooled:
        where = os.readlink(f"/proc/self/fd/{spooled.fileno()}")
        assert where.startswith(str(tmp_path)), where
        assert spooled.read() == data
