"""An image as bytes or as a file: the same answers from each."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile

import pytest

from images import sources

DATA = os.urandom(300_001)


def as_bytes():
    return DATA


def as_temporary_file():
    file = tempfile.TemporaryFile()  # noqa: SIM115 - closed when collected
    file.write(DATA)
    file.seek(123)  # consumers must not depend on where the file was left
    return file


@pytest.fixture(params=[as_bytes, as_temporary_file])
def source(request):
    return request.param()


def test_every_form_gives_the_same_answers(source):
    assert sources.size(source) == len(DATA)
    assert sources.head(source, 8) == DATA[:8]
    assert bytes(sources.read_all(source)) == DATA
    assert sources.sha256(source) == hashlib.sha256(DATA).hexdigest()
    pieces = [bytes(piece) for piece in sources.pieces(source, 65_536)]
    assert b"".join(pieces) == DATA
    assert max(len(piece) for piece in pieces) == 65_536


def test_as_file_reads_and_seeks_like_a_file(source):
    file = sources.as_file(source)
    assert file.read(10) == DATA[:10]
    assert file.seek(-5, io.SEEK_END) == len(DATA) - 5
    assert file.read() == DATA[-5:]
    assert file.seek(0) == 0
    assert file.read() == DATA
