from __future__ import annotations

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from formats.cbor import decode_cbor, encode_cbor, is_hex_text

maps = st.dictionaries(
    st.text(max_size=10),
    st.one_of(st.text(max_size=20), st.binary(max_size=50), st.integers(), st.none()),
    max_size=5,
)


@given(maps)
def test_raw_and_hex_text_of_the_same_map_decode_alike(value):
    raw = cbor2.dumps(value)
    assert decode_cbor(raw) == value
    assert decode_cbor(raw.hex().encode()) == value
    assert decode_cbor(raw.hex().upper().encode() + b"\n") == value


@given(maps)
def test_a_raw_cbor_map_is_never_taken_for_hex(value):
    assert not is_hex_text(cbor2.dumps(value))


@given(maps)
def test_encoding_round_trips(value):
    assert cbor2.loads(encode_cbor(value)) == value


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"abc",  # odd number of hex digits
        b"\xa1\x61",  # truncated
        b"\xa0\x00",  # trailing bytes
        b"\x81" * 10_000,  # deep nesting
        b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff",  # huge length, no body
        b"\x62\xff\xfe",  # invalid UTF-8
    ],
)
def test_malformed_cbor_raises_value_error(body):
    with pytest.raises(ValueError, match="CBOR"):
        decode_cbor(body)
