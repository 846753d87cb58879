from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from formats.linkformat import (
    FilterError,
    Link,
    apply_filters,
    parse,
    parse_filters,
    parse_query_filters,
    serialize,
)

tokens = st.text(alphabet="abcdefghijklmnopqrstuvwxyz.-", min_size=1, max_size=12)
attr_names = st.sampled_from(["rt", "if", "title", "anchor", "rel"])
links = st.builds(
    Link,
    href=tokens.map(lambda t: "/" + t),
    attrs=st.lists(
        st.tuples(attr_names, st.one_of(tokens, st.integers(min_value=0, max_value=65535))),
        max_size=4,
        unique_by=lambda pair: pair[0],
    ).map(tuple),
)


@given(st.lists(links, min_size=1, max_size=5))
def test_serialise_then_parse_round_trips(values):
    parsed = parse(serialize(values))
    assert [link.href for link in parsed] == [link.href for link in values]
    for got, sent in zip(parsed, values, strict=True):
        assert [(k, v) for k, v in got.attrs] == [(k, str(v)) for k, v in sent.attrs]


def test_numbers_are_bare_and_text_is_quoted():
    link = Link("/x", (("ct", 40), ("title", 'a "b"')))
    assert serialize([link]) == '</x>;ct=40;title="a \\"b\\""'


@given(links, st.sampled_from(["rt", "if", "title"]))
def test_a_filter_on_a_links_own_value_matches_it(link, name):
    for value in link.values(name):
        assert apply_filters([link], parse_filters([f"{name}={value}"])) == [link]
        assert apply_filters([link], parse_filters([f"{name}={value[:1]}*"])) == [link]


def test_space_separated_values_match_any_and_filters_and():
    link = Link("/a", (("rt", "temp light"), ("if", "sensor")))
    assert apply_filters([link], parse_filters(["rt=light"])) == [link]
    assert apply_filters([link], parse_filters(["rt=light", "if=sensor"])) == [link]
    assert apply_filters([link], parse_filters(["rt=light", "if=actuator"])) == []
    assert apply_filters([link], parse_filters(["rt=temp light"])) == []


def test_query_strings_are_percent_decoded():
    (only,) = parse_query_filters("href=%2Fa%2A")
    assert (only.name, only.value) == ("href", "/a*")


@pytest.mark.parametrize("query", ["rt", "=x", "rt=a*b", "a=1&&b=2", "rt=**"])
def test_malformed_filters_raise(query):
    with pytest.raises(FilterError):
        parse_query_filters(query)
