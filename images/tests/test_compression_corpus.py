"""Real images (testdata/, or IMAGE_CORPUS) are stored losslessly at every effort."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import corpus_images
from images.compression import FULL, QUICK, compress, pixels_equal
from images.tests.conftest_compression import info, png_ihdr


def corpus() -> list[object]:
    return [pytest.param(path, id=path.name) for path in corpus_images()]


@pytest.mark.parametrize("effort", [FULL, QUICK])
@pytest.mark.parametrize("path", corpus())
def test_corpus_image_is_stored_losslessly(path: Path, effort: str) -> None:
    data = path.read_bytes()
    result = compress(data, effort=effort)
    assert len(result.data) <= len(data)
    assert pixels_equal(data, result.data)
    before, after = info(data), info(result.data)
    for key in ("icc_profile", "exif"):
        assert after.get(key) == before.get(key)
    if data.startswith(b"\x89PNG"):
        assert png_ihdr(result.data)[2:] == png_ihdr(data)[2:]  # 16-bit stays 16-bit
