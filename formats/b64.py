"""Tolerant base64 for ``imageData``.

The contract accepts the standard and the URL-safe alphabet, missing padding,
line breaks and a ``data:image/...;base64,`` prefix; anything else is an
error. The standard library decodes; this only normalises first.
"""

from __future__ import annotations

import base64
import binascii
import re

_DATA_URL = re.compile(r"data:[\w.+-]+/[\w.+-]+(?:;[\w.+-]+=[\w.+-]+)*;base64,", re.ASCII)
_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_WHITESPACE = b" \t\r\n"


def decode_base64(text: str) -> bytes:
    """Decode ``text``; raise ``ValueError`` with a client-readable message."""
    match = _DATA_URL.match(text)
    if match:
        text = text[match.end() :]
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError("base64 may only contain ASCII characters") from None
    raw = raw.translate(_URLSAFE_TO_STANDARD, _WHITESPACE).rstrip(b"=")
    if len(raw) % 4 == 1:
        raise ValueError("base64 has an impossible length")
    raw += b"=" * (-len(raw) % 4)
    try:
        return base64.b64decode(raw, validate=True)
    except binascii.Error:
        raise ValueError("not valid base64") from None
