"""CBOR (RFC 8949) parser and renderer for Django REST framework.

The parser accepts CBOR as raw binary and, for the original prototype's
clients, CBOR sent as hex text. The two cannot be confused: a CBOR map starts
with a byte in 0xa0..0xbf (major type 5) and a tag with 0xc0..0xdb, never an
ASCII hex digit, so a body made only of hex digits (and white space) is hex.
"""

from __future__ import annotations

import binascii
import io
from collections.abc import Mapping
from typing import Any

import cbor2
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer

from formats.body import read_body

CBOR_MEDIA_TYPE = "application/cbor"

_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")
_WHITESPACE = b" \t\r\n"


def is_hex_text(body: bytes) -> bool:
    """True when ``body`` is hex text (optionally padded with white space)."""
    stripped = body.strip(_WHITESPACE)
    # Checking the first byte settles it for every valid CBOR map; the full
    # scan only runs for bodies that really are hex.
    return bool(stripped) and stripped[0] in _HEX_DIGITS and _HEX_DIGITS.issuperset(stripped)


def decode_cbor(body: bytes) -> Any:
    """Decode one CBOR data item from raw or hex-text ``body``.

    Raises ``ValueError`` with a client-readable message for anything that is
    not exactly one well-formed item (trailing bytes included).
    """
    if is_hex_text(body):
        try:
            body = binascii.unhexlify(body.strip(_WHITESPACE))
        except binascii.Error:
            raise ValueError("CBOR hex text has an odd number of digits") from None
    stream = io.BytesIO(body)
    try:
        value = cbor2.CBORDecoder(stream).decode()
    except (cbor2.CBORDecodeError, RecursionError, OverflowError, MemoryError) as exc:
        raise ValueError(f"malformed CBOR: {exc}") from None
    if stream.tell() != len(body):
        raise ValueError("malformed CBOR: trailing bytes after the first data item")
    return value


def encode_cbor(value: Any) -> bytes:
    return cbor2.dumps(_plain(value))


def _plain(value: Any) -> Any:
    # DRF hands renderers ReturnDict/ReturnList and lazy strings; cbor2 wants
    # plain containers.
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str | bytes | int | float | bool) or value is None:
        return value
    return str(value)


class CBORParser(BaseParser):
    media_type = CBOR_MEDIA_TYPE

    def parse(
        self,
        stream: Any,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        body = read_body(stream, parser_context)
        try:
            return decode_cbor(body)
        except ValueError as exc:
            raise ParseError(str(exc)) from None


class CBORRenderer(BaseRenderer):
    media_type = CBOR_MEDIA_TYPE
    format = "cbor"
    charset = None
    render_style = "binary"

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        if data is None:
            return b""
        return encode_cbor(data)
