"""The at-rest layer: an image held compacted (API.md §12) is rebuilt from what is held.

One layer over any backend: the rows and the objects hold the compacted
bytes like any other, and this turns them back into the served image, bit
for bit (:func:`images.compression.jxl.jpeg_restore`). The caller,
:func:`images.storage.image_bytes`, checks what comes back against the
image's sha256 before it is served (API.md §14).
"""

from __future__ import annotations

from images.models import Image


def rebuilt(image: Image, held: bytes) -> bytes:
    """The served bytes of ``image`` rebuilt from ``held``; ValueError if they cannot be."""
    from images.compression.jxl import jpeg_restore  # only compacted images need libjxl

    return jpeg_restore(held, image.at_rest_form)
