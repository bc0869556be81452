"""CycloneDX 1.5 JSON, written directly: the CycloneDX library keeps its
components in sorted sets and its writing grows with the square of the
components (10.9 s for 6,000 files); this is linear. The tests validate
every document against the official schema (cyclonedx-python-lib's strict
validator)."""

from __future__ import annotations

import json
from typing import Any

from slimmer.components import AppComponent, Ecosystem
from slimmer.sbom.model import (
    PURL_TYPES,
    SbomFile,
    SbomInput,
    component_purl,
    package_purl,
    text_of,
)

SPEC_VERSION = "1.5"
IMAGE_REF = "image"


def _properties(pairs: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"name": name, "value": value} for name, value in pairs if value]


def _hashes(item: SbomFile) -> list[dict[str, str]]:
    return [{"alg": "SHA-256", "content": item.sha256}, {"alg": "SHA-1", "content": item.sha1}]


def _subject(data: SbomInput) -> dict[str, Any]:
    subject = data.subject
    component: dict[str, Any] = {
        "type": "container",
        "bom-ref": IMAGE_REF,
        "name": subject.name,
    }
    if subject.image_id:
        component["version"] = subject.image_id
    purl = subject.purl()
    if purl:
        component["purl"] = purl
    component["properties"] = _properties(
        [
            *(("slim:image:tag", tag) for tag in subject.tags),
            ("slim:image:id", subject.image_id),
            *(("slim:image:digest", digest) for digest in subject.digests),
            ("slim:source:image", subject.source_image),
            ("slim:source:id", subject.source_id),
        ]
    )
    return component


def _app_component(component: AppComponent, files: dict[str, SbomFile]) -> dict[str, Any]:
    kind = "application" if component.ecosystem is Ecosystem.BINARY else "library"
    entry: dict[str, Any] = {
        "type": kind,
        "bom-ref": f"component:{text_of(component.evidence)}",
        "name": component.name,
        "version": component.version,
        "purl": component_purl(component),
    }
    if component.cpe:
        entry["cpe"] = component.cpe
    if component.ecosystem is Ecosystem.BINARY and component.evidence in files:
        entry["hashes"] = _hashes(files[component.evidence])
    entry["evidence"] = {
        "identity": {
            "field": "purl",
            "confidence": 1 if component.ecosystem is not Ecosystem.BINARY else 0.8,
            "methods": [
                {
                    "technique": "binary-analysis"
                    if component.ecosystem is Ecosystem.BINARY
                    else "manifest-analysis",
                    "confidence": 1 if component.ecosystem is not Ecosystem.BINARY else 0.8,
                    "value": text_of(component.evidence),
                }
            ],
        },
        "occurrences": [{"location": text_of(path)} for path in component.files],
    }
    return entry


def render_cyclonedx(data: SbomInput) -> str:
    """The document, as text (one JSON document and a newline)."""
    subject = data.subject
    components: list[dict[str, Any]] = []
    release = data.release
    if release.id:
        os_component: dict[str, Any] = {
            "type": "operating-system",
            "bom-ref": f"os:{release.id}",
            "name": release.id,
        }
        if release.version_id:
            os_component["version"] = release.version_id
        if release.pretty_name:
            os_component["description"] = release.pretty_name
        components.append(os_component)
    for item in data.packages.packages:
        package = item.package
        if package.manager not in PURL_TYPES:
            continue
        purl = package_purl(package, release)
        components.append(
            {
                "type": "library",
                "bom-ref": purl,
                "name": package.name,
                "version": package.version,
                "purl": purl,
                "properties": _properties(
                    [
                        ("slim:package:manager", package.manager.value),
                        ("slim:package:source", package.source),
                        ("slim:package:source-version", package.source_version),
                        ("slim:package:kept-files", str(len(item.kept_files))),
                    ]
                ),
            }
        )
    by_path = data.files_by_path()
    components.extend(_app_component(component, by_path) for component in data.components)
    for item in data.unclaimed_files():
        name = text_of(item.path)
        components.append(
            {
                "type": "file",
                "bom-ref": f"file:{name}",
                "name": name,
                "hashes": _hashes(item),
                "properties": _properties([("slim:file:size", str(item.size))]),
            }
        )
    document = {
        "$schema": "http://cyclonedx.org/schema/bom-1.5.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "serialNumber": f"urn:uuid:{subject.uuid()}",
        "version": 1,
        "metadata": {
            "timestamp": subject.timestamp(),
            "tools": {
                "components": [
                    {
                        "type": "application",
                        "name": "slim",
                        "version": data.tool_version,
                        "description": "makes micro container images from fat build images",
                    }
                ]
            },
            "component": _subject(data),
        },
        "components": components,
        "dependencies": [
            {"ref": IMAGE_REF, "dependsOn": [entry["bom-ref"] for entry in components]},
            *({"ref": entry["bom-ref"]} for entry in components),
        ],
    }
    return json.dumps(document, separators=(",", ":")) + "\n"
