from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from formats.b64 import decode_base64


@given(st.binary(max_size=300))
def test_every_tolerated_variant_decodes_to_the_same_bytes(data):
    standard = base64.b64encode(data).decode()
    variants = [
        standard,
        standard.rstrip("="),
        base64.urlsafe_b64encode(data).decode(),
        base64.urlsafe_b64encode(data).decode().rstrip("="),
        "\r\n".join(standard[i : i + 76] for i in range(0, len(standard), 76)),
        "data:image/png;base64," + standard,
    ]
    for variant in variants:
        assert decode_base64(variant) == data


@pytest.mark.parametrize("text", ["a", "abcde", "ab!d", "é", "data:image/png;base64,@@@@", "ab=c"])
def test_anything_else_is_an_error(text):
    with pytest.raises(ValueError, match="base64"):
        decode_base64(text)
