from typing import IO, Any

import cbor2
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser


class HexCBORParser(BaseParser):
    """CBOR sent as hex text, the only form the prototype understood."""

    media_type = "application/cbor"

    def parse(
        self, stream: IO[bytes], media_type: str | None = None, parser_context: Any = None
    ) -> Any:
        try:
            return cbor2.loads(bytes.fromhex(stream.read().decode("ascii")))
        except (ValueError, cbor2.CBORDecodeError) as error:
            raise ParseError(f"CBOR parse error - {error}") from error
