"""The raw-image body parser (the JSON and CBOR ones are in ``formats``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

from rest_framework.parsers import BaseParser

from formats.body import spool_body
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
