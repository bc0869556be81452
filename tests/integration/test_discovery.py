"""Routes no probe named, exercised anyway: the pages the app's own pages
link to (a bounded crawl, on by default), and the GET routes of an OpenAPI
document. Each micro image is then asked, through plain docker, for a route
only the crawl or the document reached; the app-content rule is off, so
nothing else keeps those pages."""

from __future__ import annotations

import json
from pathlib import Path

from slimmer.engine import Engine
from tests.conftest import REPO
from tests.helpers.serve import serve_and_get
from tests.helpers.slimrun import run_slim

SITE = REPO / "fixtures" / "linkedsite" / "www"
ROUTES = ["/", "/docs/guide.html", "/docs/deep/page.html", "/img/logo.svg", "/unlinked.html"]


def build(image: str, tag: str, tmp_path: Path, *trace_args: str) -> None:
    traced = run_slim("trace", image, "-o", str(tmp_path / "t.json"), "--quiet-app", *trace_args)
    assert traced.exit_code == 0, traced.describe()
    built = run_slim(
        "build", image, "-t", tag, "--trace", str(tmp_path / "t.json"), "--no-app-content",
        "--report", str(tmp_path / "r.json"), "--verify",
    )  # fmt: skip
    assert built.exit_code == 0, built.describe()


def test_a_crawl_reaches_the_pages_the_app_links_to(
    engine: Engine, fixture_image, micro_tags, run_id: str, tmp_path: Path
) -> None:
    image = fixture_image("linkedsite")
    crawled, uncrawled = micro_tags(), micro_tags()
    build(image, crawled, tmp_path)
    trace = json.loads((tmp_path / "t.json").read_text())
    found = {p["probe"]["path"] for p in trace["probes"] if p["probe"]["found_by"] == "crawl"}
    assert {"/docs/guide.html", "/docs/", "/docs/deep/page.html", "/img/logo.svg"} <= found
    assert "/unlinked.html" not in found  # only what is linked
    fat = serve_and_get(engine, image, 8080, ROUTES, run_id)
    micro = serve_and_get(engine, crawled, 8080, ROUTES, run_id)
    assert micro[:4] == fat[:4] and fat[2] == (200, (SITE / "docs/deep/page.html").read_bytes())
    assert micro[4][0] == 404 and fat[4][0] == 200  # linked from nowhere: not kept
    build(image, uncrawled, tmp_path, "--no-crawl")
    without = serve_and_get(engine, uncrawled, 8080, ROUTES, run_id)
    assert without[0] == fat[0] and without[2][0] == 404  # the crawl is what kept it


def test_an_openapi_document_names_routes(
    engine: Engine, fixture_image, micro_tags, run_id: str, tmp_path: Path
) -> None:
    document = tmp_path / "site.json"
    document.write_text(
        json.dumps(
            {
                "openapi": "3.0.0",
                "paths": {
                    "/{page}.html": {
                        "get": {
                            "parameters": [
                                {"name": "page", "in": "path", "required": True,
                                 "example": "unlinked"}
                            ]
                        }
                    },
                    "/img/logo.svg": {"get": {}},
                },
            }
        )
    )  # fmt: skip
    image, tag = fixture_image("linkedsite"), micro_tags()
    build(image, tag, tmp_path, "--no-crawl", "--openapi", str(document))
    fat = serve_and_get(engine, image, 8080, ["/unlinked.html", "/img/logo.svg"], run_id)
    assert serve_and_get(engine, tag, 8080, ["/unlinked.html", "/img/logo.svg"], run_id) == fat
    assert fat[0] == (200, (SITE / "unlinked.html").read_bytes())
