"""The OpenAPI 3 schema at /api/schema and its docs at /api/docs (API.md §7)."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django.urls import URLPattern, URLResolver, get_resolver
from drf_spectacular.validation import validate_schema

from images.uploads import RAW_IMAGE_TYPES

pytestmark = pytest.mark.django_db

ERROR_REF = "#/components/schemas/Error"
# Routes that are not part of the API: pages for people, the schema itself, the catch-all.
NOT_API = re.compile(r"(|gallery/.*|accounts/.*|api/.*)")


@pytest.fixture
def schema(client) -> dict:
    response = client.get("/api/schema", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    return json.loads(response.content)


def operations(schema: dict):
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            yield path, method, operation


def api_routes() -> set[str]:
    """Every URL pattern of config.urls that serves the API, as an OpenAPI path."""
    routes = set()
    for pattern in get_resolver().url_patterns:
        assert not isinstance(pattern, URLResolver), "no include()s expected"
        assert isinstance(pattern, URLPattern)
        route = str(pattern.pattern)
        if NOT_API.fullmatch(route.lstrip("^").rstrip("$")):
            continue
        route = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", route)
        route = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)
        routes.add("/" + route.lstrip("^").rstrip("$"))
    return routes


def test_the_schema_is_valid_openapi_3(schema):
    assert schema["openapi"].startswith("3.")
    validate_schema(schema)


def test_the_schema_is_yaml_by_default(client):
    response = client.get("/api/schema")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi")
    assert yaml.safe_load(response.content)["paths"]


def test_every_api_route_is_in_the_schema(schema):
    assert api_routes() == set(schema["paths"])


def test_every_operation_has_an_id_a_summary_and_documents_its_errors(schema):
    for path, method, operation in operations(schema):
        assert operation.get("operationId"), (path, method)
        assert operation.get("summary"), (path, method)
        for status, answer in operation["responses"].items():
            if status.startswith("4") and path not in ("/healthz", "/metrics"):
                for media_type in ("application/json", "application/cbor"):
                    assert answer["content"][media_type]["schema"]["$ref"] == ERROR_REF


def test_the_upload_documents_every_body_format_and_answer(schema):
    upload = schema["paths"]["/collections/images"]["post"]
    assert set(upload["requestBody"]["content"]) == {
        "application/json",
        "application/cbor",
        "multipart/form-data",
        *RAW_IMAGE_TYPES,
    }
    form = upload["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["properties"]["imageData"]["format"] == "binary"
    assert {"201", "200", "400", "401", "403", "409", "413", "415", "429"} <= set(
        upload["responses"]
    )
    assert set(upload["responses"]["201"]["content"]) == {
        "application/json",
        "application/cbor",
        "application/link-format",
    }
    assert "Location" in upload["responses"]["201"]["headers"]
    assert "Retry-After" in upload["responses"]["429"]["headers"]
    assert "WWW-Authenticate" in upload["responses"]["401"]["headers"]
    assert upload["security"][0] == {"bearerToken": []}


@pytest.mark.parametrize("path", ["/collections/images", "/collections/images/{image_id}"])
def test_downloads_document_image_types_ranges_and_revalidation(schema, path):
    download = schema["paths"][path]["get"]
    answers = download["responses"]
    assert {"image/png", "image/jpeg", "image/gif", "image/webp"} <= set(answers["200"]["content"])
    assert "multipart/byteranges" in answers["206"]["content"]
    assert {"200", "206", "304", "400", "401", "403", "404", "406", "416"} <= set(answers)
    assert {"ETag", "Last-Modified", "Cache-Control"} <= set(answers["200"]["headers"])
    headers = {p["name"] for p in download["parameters"] if p["in"] == "header"}
    assert {"Range", "If-None-Match", "If-Modified-Since"} <= headers


def test_query_parameters_come_from_the_serializers(schema):
    find = schema["paths"]["/collections/images"]["get"]["parameters"]
    required = {p["name"] for p in find if p["in"] == "query" and p.get("required")}
    assert required == {"deviceId", "timestamp"}
    listing = schema["paths"]["/devices/{device_id}/images"]["get"]["parameters"]
    limit = next(p for p in listing if p["name"] == "limit")
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 1000)
    assert {"from", "to", "cursor"} <= {p["name"] for p in listing}


def test_discovery_is_documented_as_link_format_and_open(schema):
    for path in ("/.well-known/core", "/collections"):
        operation = schema["paths"][path]["get"]
        assert "application/link-format" in operation["responses"]["200"]["content"]
        assert operation["security"] == [{}]


def test_open_mode_lets_every_operation_go_without_credentials(schema):
    for path, method, operation in operations(schema):
        assert {} in operation.get("security", [{}]), (path, method)


def test_token_mode_requires_credentials_except_for_the_open_endpoints(client, settings):
    settings.IMAGES_AUTH = "token"
    schema = json.loads(client.get("/api/schema", HTTP_ACCEPT="application/json").content)
    open_paths = {"/.well-known/core", "/collections", "/healthz", "/metrics"}
    for path, method, operation in operations(schema):
        assert ({} in operation["security"]) == (path in open_paths), (path, method)
    assert set(schema["components"]["securitySchemes"]) == {"bearerToken", "staffSession"}


def test_the_docs_are_swagger_ui_served_from_our_own_static_files(client):
    response = client.get("/api/docs")
    assert response.status_code == 200
    html = response.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any("swagger-ui-bundle.js" in asset for asset in assets)
    for asset in assets:
        assert asset.startswith("/static/drf_spectacular_sidecar/"), asset
        assert finders.find(asset.removeprefix("/static/")), asset
    assert "/api/schema" in html


@pytest.mark.parametrize("mode", ["open", "token"])
def test_the_schema_generates_without_a_warning(settings, tmp_path, mode):
    settings.IMAGES_AUTH = mode
    call_command(
        "spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml")
    )
