from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from formats.rfc3339 import format_compact, format_timestamp, parse_timestamp

instants = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.just(UTC),
)


@given(instants)
def test_format_then_parse_is_the_same_instant(value):
    assert parse_timestamp(format_timestamp(value)) == value


@given(instants, st.integers(min_value=-23 * 60, max_value=23 * 60))
def test_any_offset_names_the_same_instant(value, minutes):
    tz = timezone(timedelta(minutes=minutes))
    text = value.astimezone(tz).isoformat()
    assert parse_timestamp(text) == value


@given(instants)
def test_a_plus_arrived_as_a_space_is_read_as_plus_in_queries(value):
    text = value.astimezone(timezone(timedelta(hours=2))).isoformat()
    assert parse_timestamp(text.replace("+", " "), space_means_plus=True) == value
    with pytest.raises(ValueError, match="date-time"):
        parse_timestamp(text.replace("+", " "))


def test_no_offset_means_utc_and_lowercase_is_allowed():
    assert parse_timestamp("2024-08-18t02:04:07z") == datetime(2024, 8, 18, 2, 4, 7, tzinfo=UTC)
    assert parse_timestamp("2024-08-18 02:04:07") == datetime(2024, 8, 18, 2, 4, 7, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    [
        "2024-08-18T02:04:07.1234567Z",
        "0000-01-01T00:00:00Z",
        "2024-02-30T00:00:00Z",
        "2024-08-18T24:00:00Z",
        "2024-08-18T02:04:60Z",
        "2024-08-18T02:04:07+24:00",
        "9999-12-31T23:59:59-01:00",
        "2024-08-18",
        "2024-W33-7T00:00:00Z",
        "",
        "٢٠٢٤-08-18T02:04:07Z",
    ],
)
def test_it_rejects_what_the_contract_rejects(text):
    with pytest.raises(ValueError, match="date-time"):
        parse_timestamp(text)


def test_compact_form_pads_small_years():
    assert format_compact(datetime(5, 1, 2, 3, 4, 5, 6, tzinfo=UTC)) == "00050102T030405.000006Z"
