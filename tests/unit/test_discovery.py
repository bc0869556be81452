"""Routes found without a probe naming them: the same-origin links of a
page, and the GET routes of an OpenAPI document."""

from __future__ import annotations

import json

import pytest

from slimmer.discovery import (
    DiscoveryError,
    load_openapi,
    openapi_routes,
    same_origin_paths,
)

PAGE = b"""<!DOCTYPE html><html><head><link rel="stylesheet" href="style.css">
<script src="/js/app.js?v=2"></script></head><body>
<a href="docs/guide.html#part">guide</a> <a href="./docs/guide.html">again</a>
<a href="../up.html">up</a> <a href="http://127.0.0.1:8080/abs.html">same server</a>
<a href="http://127.0.0.1:9090/other-port.html">other port</a>
<a href="https://example.invalid/x">elsewhere</a> <a href="mailto:a@b.invalid">mail</a>
<a href="javascript:void(0)">js</a> <img src="img/logo.png"> <a href="dir/">a listing</a>
<form action="/post-only"><input name="q"></form> <a>no href</a>
</body></html>"""


def test_links_of_a_page_on_the_same_server() -> None:
    found = same_origin_paths(PAGE, "/site/index.html", "127.0.0.1", 8080)
    assert found == [
        "/site/style.css",
        "/js/app.js?v=2",
        "/site/docs/guide.html",
        "/up.html",
        "/abs.html",
        "/site/img/logo.png",
        "/site/dir/",
    ]


def test_a_base_tag_moves_relative_links_and_garbage_is_no_link() -> None:
    page = b'<html><head><base href="/static/"></head><body><a href="a.html">a</a>'
    assert same_origin_paths(page, "/x/y.html", "127.0.0.1", 80) == ["/static/a.html"]
    assert same_origin_paths(b"\xff\xfe<<<a href=", "/", "127.0.0.1", 80) == []
    assert same_origin_paths(b'<a href="/../../etc/passwd">', "/", "127.0.0.1", 80) == [
        "/etc/passwd"  # a path on the app's own server: the app decides what it is
    ]


OPENAPI = {
    "openapi": "3.0.3",
    "servers": [{"url": "http://api.example.invalid/api/v1"}],
    "components": {
        "parameters": {
            "Item": {"name": "item", "in": "path", "required": True, "schema": {"example": 7}}
        }
    },
    "paths": {
        "/health": {"get": {"responses": {"200": {"description": "ok"}}}},
        "/items/{item}": {"get": {"parameters": [{"$ref": "#/components/parameters/Item"}]}},
        "/zones/{zone}": {
            "parameters": [
                {"name": "zone", "in": "path", "required": True, "schema": {"enum": ["Asia/Tokyo"]}}
            ],
            "get": {
                "parameters": [
                    {"name": "fmt", "in": "query", "required": True, "example": "json"},
                    {"name": "page", "in": "query", "schema": {"type": "integer"}},
                ]
            },
        },
        "/users/{id}": {"get": {"parameters": [{"name": "id", "in": "path", "required": True}]}},
        "/upload": {"post": {}},
    },
}


def test_openapi_get_routes_with_their_examples() -> None:
    routes = openapi_routes(load_openapi(json.dumps(OPENAPI).encode(), "api.json"))
    assert routes.paths == (
        "/api/v1/health",
        "/api/v1/items/7",
        "/api/v1/zones/Asia%2FTokyo?fmt=json",
    )
    assert routes.skipped == (("/api/v1/users/{id}", "no example for id"),)


def test_swagger_2_in_yaml() -> None:
    text = b"""swagger: "2.0"
basePath: /v2
paths:
  /pets/{petId}:
    get:
      parameters:
        - {name: petId, in: path, required: true, type: string, default: rex}
  /store:
    get: {}
"""
    assert openapi_routes(load_openapi(text, "pets.yaml")).paths == ("/v2/pets/rex", "/v2/store")


@pytest.mark.parametrize("text", [b"{}", b"[1, 2]", b"paths: [", b"\x00\x01"])
def test_documents_that_are_not_openapi_are_refused(text: bytes) -> None:
    with pytest.raises(DiscoveryError):
        load_openapi(text, "bad")
