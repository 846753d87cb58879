"""API.md §1: discovery over HTTP."""

from __future__ import annotations

import json

import cbor2
import pytest

from formats.linkformat import parse

ORIGINAL_LINK = '</collections/images>;rt="simple.act";if="core.b"'

# Discovery lists each device's observable latest image, from the database.
pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("url", ["/.well-known/core", "/collections"])
def test_it_serves_link_format_whose_first_link_is_the_original(client, url):
    response = client.get(url)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/link-format"
    body = response.content.decode()
    assert body.split(",")[0] == ORIGINAL_LINK
    links = parse(body)
    assert links[0].href == "/collections/images"
    assert dict(links[0].attrs) == {"rt": "simple.act", "if": "core.b"}


def test_collections_lists_only_links_under_collections(client):
    links = parse(client.get("/collections").content.decode())
    assert links
    assert all(link.href.startswith("/collections/") for link in links)


@pytest.mark.parametrize(
    "query",
    [
        "rt=simple.act",
        "rt=simple*",
        "if=core.b",
        "href=/collections/images",
        "href=/collections*",
        "rt=simple.act&if=core.b",
        "rt=*",
    ],
)
def test_a_matching_filter_keeps_the_images_link(client, query):
    response = client.get(f"/.well-known/core?{query}")
    assert response.status_code == 200
    assert [link.href for link in parse(response.content.decode())] == ["/collections/images"]


@pytest.mark.parametrize(
    "query",
    ["rt=nothing", "rt=simple.act&if=core.ll", "if=core.b&rt=other*", "title=x", "href=/nothing"],
)
def test_no_match_is_200_with_an_empty_body(client, query):
    response = client.get(f"/.well-known/core?{query}")
    assert response.status_code == 200
    assert response.content == b""


@pytest.mark.parametrize("query", ["rt", "=simple.act", "rt=si*mple", "rt=*x", "rt=a&&if=b"])
def test_a_malformed_filter_is_400_in_the_error_format(client, query):
    response = client.get(f"/.well-known/core?{query}")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert list(response.json()["errors"]) == ["detail"]


@pytest.mark.parametrize("accept", ["application/json", "text/html", "application/cbor"])
def test_an_accept_without_link_format_is_406(client, accept):
    response = client.get("/.well-known/core", HTTP_ACCEPT=accept)
    assert response.status_code == 406
    if accept == "application/cbor":
        assert response["Content-Type"] == "application/cbor"
        assert "detail" in cbor2.loads(response.content)["errors"]
    else:
        assert response["Content-Type"] == "application/json"
        assert "detail" in json.loads(response.content)["errors"]


@pytest.mark.parametrize(
    "accept", ["application/link-format", "*/*", "text/html,application/xhtml+xml,*/*;q=0.8"]
)
def test_an_accept_that_admits_link_format_gets_it(client, accept):
    response = client.get("/.well-known/core", HTTP_ACCEPT=accept)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/link-format"
