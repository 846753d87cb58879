"""The raw-image and multipart body parsers (the JSON and CBOR ones are in ``formats``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

from rest_framework.parsers import BaseParser, DataAndFiles, MultiPartParser

from formats.body import CheckedBody, spool_body
from images.uploads import media_type_checked


class RawImageParser(BaseParser):
    """The image bytes themselves; ``deviceId`` and ``timestamp`` come in the query.

    Registered for every media type (DRF picks it last) so that it can answer
    415 with the list of what is accepted, or for a missing Content-Type.
    """

    media_type = "*/*"

    def parse(
        self,
        stream: Any,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> IO[bytes]:
        media_type_checked(media_type)
        return spool_body(stream, parser_context)


class MultipartFormParser(MultiPartParser):
    """``multipart/form-data`` (RFC 7578): Django's parser, through DRF's.

    File parts go through the request's upload handlers (Django's defaults:
    in memory while the whole body is at most ``FILE_UPLOAD_MAX_MEMORY_SIZE``,
    2.5 MB, else written to a temporary file in ``FILE_UPLOAD_TEMP_DIR`` as
    it arrives), so an image is held once, never whole in memory beside the
    body. Django closes (and so deletes) those files when the response is
    done. The body is read through :class:`formats.body.CheckedBody`: one
    that ends before its Content-Length is a 400, not a shorter image.
    """

    def parse(
        self,
        stream: Any,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> DataAndFiles:
        return super().parse(CheckedBody(stream, parser_context), media_type, parser_context)
