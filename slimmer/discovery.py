"""Routes the probes did not name, found from what the app answers or
documents: the same-origin links of its HTML pages (a bounded crawl:
`href` and `src`, directory listings included) and the GET operations of an
OpenAPI document (`--openapi FILE`). Pure: pages and documents in, request
paths out; the probes run them (slimmer.probes).

A crawl follows only what a page links to on the same server (a relative
link, or an absolute one to the same host and port), never a form, never
another method than GET, and stops at its limits of pages, depth and time.
An OpenAPI path with parameters is probed only where the document gives
each one a value (an example, a default, the first of an enum); the others
are reported, not guessed."""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote, urlencode, urljoin, urlsplit

from slimmer.errors import ExitCode, SlimError

MAX_PAGE_BYTES = 2 * 1024 * 1024  # of a page parsed for links
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024  # of an OpenAPI document
LINK_ATTRIBUTES = {
    "a": "href",
    "area": "href",
    "link": "href",
    "img": "src",
    "script": "src",
    "iframe": "src",
    "frame": "src",
    "source": "src",
    "audio": "src",
    "video": "src",
    "embed": "src",
}
_PARAMETER = re.compile(r"\{([^{}/]+)\}")


class DiscoveryError(SlimError):
    """An OpenAPI document that cannot be read."""

    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class CrawlLimits:
    """How far a crawl goes: pages requested in all, links followed from a
    probed page (depth), seconds."""

    pages: int = 50
    depth: int = 3
    seconds: float = 15.0


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self.base: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "base" and self.base is None:
            self.base = dict(attrs).get("href")
            return
        wanted = LINK_ATTRIBUTES.get(tag)
        if wanted is None:
            return
        for name, value in attrs:
            if name == wanted and value:
                self.found.append(value.strip())


def same_origin_paths(page: bytes, page_path: str, host: str, port: int) -> list[str]:
    """The request paths (with their query) a page links to on the same
    server, in the order they appear, each once; fragments dropped."""
    parser = _Links()
    try:
        parser.feed(page[:MAX_PAGE_BYTES].decode("utf-8", "replace"))
        parser.close()
    except (AssertionError, ValueError):  # html.parser gives up on some garbage
        pass
    base = urljoin(f"http://{host}:{port}{page_path}", parser.base or "")
    paths: dict[str, None] = {}
    for link in parser.found:
        absolute = urljoin(base, link)
        parts = urlsplit(absolute)
        if parts.scheme not in ("http", "") or (parts.hostname, parts.port or 80) != (host, port):
            continue
        path = _normal(parts.path or "/")
        paths[path + (f"?{parts.query}" if parts.query else "")] = None
    return list(paths)


def _normal(path: str) -> str:
    """/a/./b/../c -> /a/c, keeping a trailing slash (a directory listing)."""
    trailing = path.endswith("/") and path != "/"
    cleaned = posixpath.normpath(path) if path else "/"
    cleaned = "/" + cleaned.lstrip("/")
    return cleaned + "/" if trailing and cleaned != "/" else cleaned


def is_html(content_type: str | None) -> bool:
    return bool(content_type) and content_type.split(";")[0].strip().lower() in (  # type: ignore[union-attr]
        "text/html",
        "application/xhtml+xml",
    )


# -- OpenAPI ----------------------------------------------------------------------


@dataclass(frozen=True)
class OpenApiRoutes:
    """The GET routes of a document, as request paths, and the ones that
    could not be given a value for every parameter (path, reason)."""

    paths: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]


def load_openapi(text: bytes, name: str) -> Mapping[str, Any]:
    """An OpenAPI 3 or Swagger 2 document, JSON or YAML."""
    if len(text) > MAX_DOCUMENT_BYTES:
        raise DiscoveryError(f"--openapi {name}: larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        document = json.loads(text)
    except ValueError:
        try:
            import yaml

            document = yaml.safe_load(text)
        except Exception as exc:  # yaml.YAMLError, and what a bad document raises
            raise DiscoveryError(
                f"--openapi {name} is neither JSON nor YAML: {str(exc).splitlines()[0]}"
            ) from None
    if not isinstance(document, dict) or not isinstance(document.get("paths"), dict):
        raise DiscoveryError(
            f"--openapi {name} has no 'paths'", "give an OpenAPI 3 or Swagger 2 document"
        )
    return document


def openapi_routes(document: Mapping[str, Any]) -> OpenApiRoutes:
    """Every GET operation's request path: the base path of the first
    server (OpenAPI 3) or basePath (Swagger 2) in front; path and required
    query parameters filled from the document's examples, defaults or
    enums."""
    base = _base_path(document)
    paths: list[str] = []
    skipped: list[tuple[str, str]] = []
    for template, item in sorted(document["paths"].items()):
        if not isinstance(template, str) or not isinstance(item, dict):
            continue
        operation = item.get("get")
        if not isinstance(operation, dict):
            continue
        parameters = _parameters(document, item.get("parameters"), operation.get("parameters"))
        values: dict[str, str] = {}
        query: dict[str, str] = {}
        missing = []
        for parameter in parameters:
            where, name = parameter.get("in"), parameter.get("name")
            if not isinstance(name, str) or where not in ("path", "query"):
                continue
            required = where == "path" or bool(parameter.get("required"))
            value = _example(document, parameter)
            if value is None:
                if required:
                    missing.append(name)
                continue
            (values if where == "path" else query)[name] = value
        unnamed = [n for n in _PARAMETER.findall(template) if n not in values and n not in missing]
        missing += unnamed
        if missing:
            skipped.append((base + template, f"no example for {', '.join(sorted(missing))}"))
            continue
        path = _fill(template, values)
        paths.append(base + path + (f"?{urlencode(query)}" if query else ""))
    return OpenApiRoutes(tuple(dict.fromkeys(paths)), tuple(skipped))


def _fill(template: str, values: Mapping[str, str]) -> str:
    return _PARAMETER.sub(lambda found: quote(values[found.group(1)], safe=""), template)


def _base_path(document: Mapping[str, Any]) -> str:
    servers = document.get("servers")
    if isinstance(servers, list) and servers and isinstance(servers[0], dict):
        url = str(servers[0].get("url") or "")
        return urlsplit(url).path.rstrip("/") if "{" not in url else ""
    return str(document.get("basePath") or "").rstrip("/")


def _resolve(document: Mapping[str, Any], value: Any, depth: int = 0) -> Any:
    """A local $ref (#/components/parameters/x), followed a few times."""
    while isinstance(value, dict) and isinstance(value.get("$ref"), str) and depth < 8:
        pointer = value["$ref"]
        if not pointer.startswith("#/"):
            return {}
        node: Any = document
        for part in pointer[2:].split("/"):
            node = (
                node.get(part.replace("~1", "/").replace("~0", "~"))
                if isinstance(node, dict)
                else None
            )
        value, depth = node, depth + 1
    return value


def _parameters(document: Mapping[str, Any], *lists: Any) -> list[dict[str, Any]]:
    merged: dict[tuple[Any, Any], dict[str, Any]] = {}
    for items in lists:
        for item in items if isinstance(items, list) else ():
            parameter = _resolve(document, item)
            if isinstance(parameter, dict):
                merged[(parameter.get("in"), parameter.get("name"))] = parameter
    return list(merged.values())


def _example(document: Mapping[str, Any], parameter: Mapping[str, Any]) -> str | None:
    schema = _resolve(document, parameter.get("schema")) or {}
    candidates: Iterable[Any] = (
        parameter.get("example"),
        *(
            e.get("value")
            for e in (parameter.get("examples") or {}).values()
            if isinstance(e, dict)
        ),
        schema.get("example") if isinstance(schema, dict) else None,
        schema.get("default") if isinstance(schema, dict) else None,
        parameter.get("default"),  # Swagger 2
        *((schema.get("enum") or [])[:1] if isinstance(schema, dict) else ()),
        *((parameter.get("enum") or [])[:1]),
    )
    for value in candidates:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (str, int, float)):
            return str(value)
    return None
