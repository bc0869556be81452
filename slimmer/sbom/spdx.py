"""SPDX 2.3 JSON, written directly (spdx-tools takes 16 s to write 60,000
files and validates in time that grows with their square; it is what the
tests validate every document with). One package for the image, which
CONTAINS the operating system, each OS package, each app component and
each file no component claims; an app component CONTAINS its files.
Every file has the SHA1 SPDX requires and its SHA256."""

from __future__ import annotations

import hashlib
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

SPDX_VERSION = "SPDX-2.3"
DOCUMENT = "SPDXRef-DOCUMENT"
IMAGE = "SPDXRef-Image"
NAMESPACE_BASE = "https://spdx.org/spdxdocs/slim"
NOASSERTION = "NOASSERTION"


def _package(
    spdx_id: str,
    name: str,
    version: str | None,
    purpose: str,
    refs: list[dict[str, str]],
    comment: str = "",
) -> dict[str, Any]:
    package: dict[str, Any] = {
        "SPDXID": spdx_id,
        "name": name,
        "downloadLocation": NOASSERTION,
        "filesAnalyzed": False,
        "primaryPackagePurpose": purpose,
    }
    if version:
        package["versionInfo"] = version
    if refs:
        package["externalRefs"] = refs
    if comment:
        package["comment"] = comment
    return package


def _analyzed(package: dict[str, Any], files: list[SbomFile]) -> dict[str, Any]:
    """A package that CONTAINS files must say its files were analyzed, with
    the verification code SPDX defines: the SHA1 of its files' SHA1s,
    sorted and joined."""
    if not files:
        return package
    joined = "".join(sorted(item.sha1 for item in files)).encode()
    code = hashlib.sha1(joined, usedforsecurity=False).hexdigest()
    return {
        **package,
        "filesAnalyzed": True,
        "packageVerificationCode": {"packageVerificationCodeValue": code},
    }


def _purl_ref(purl: str) -> dict[str, str]:
    return {
        "referenceCategory": "PACKAGE-MANAGER",
        "referenceType": "purl",
        "referenceLocator": purl,
    }


def _file(spdx_id: str, item: SbomFile) -> dict[str, Any]:
    return {
        "SPDXID": spdx_id,
        "fileName": "." + text_of(item.path),
        "checksums": [
            {"algorithm": "SHA1", "checksumValue": item.sha1},
            {"algorithm": "SHA256", "checksumValue": item.sha256},
        ],
    }


def _contains(parent: str, child: str) -> dict[str, str]:
    return {"spdxElementId": parent, "relationshipType": "CONTAINS", "relatedSpdxElement": child}


def _component(spdx_id: str, component: AppComponent) -> dict[str, Any]:
    refs = [_purl_ref(component_purl(component))]
    if component.cpe:
        refs.append(
            {
                "referenceCategory": "SECURITY",
                "referenceType": "cpe23Type",
                "referenceLocator": component.cpe,
            }
        )
    purpose = "APPLICATION" if component.ecosystem is Ecosystem.BINARY else "LIBRARY"
    how = "version string in" if component.ecosystem is Ecosystem.BINARY else "metadata in"
    return _package(
        spdx_id,
        component.name,
        component.version,
        purpose,
        refs,
        f"found by slim: {how} {text_of(component.evidence)}",
    )


def render_spdx(data: SbomInput) -> str:
    """The document, as text (one JSON document and a newline)."""
    subject = data.subject
    refs = []
    purl = subject.purl()
    if purl:
        refs.append(_purl_ref(purl))
    image_comment = "; ".join(
        [
            *(f"tag {tag}" for tag in subject.tags),
            *(f"digest {digest}" for digest in subject.digests),
            f"made by slim from {subject.source_image} ({subject.source_id})",
        ]
    )
    packages = [
        _package(IMAGE, subject.name, subject.image_id or None, "CONTAINER", refs, image_comment)
    ]
    relationships = [
        {"spdxElementId": DOCUMENT, "relationshipType": "DESCRIBES", "relatedSpdxElement": IMAGE}
    ]
    release = data.release
    if release.id:
        packages.append(
            _package(
                "SPDXRef-OperatingSystem",
                release.id,
                release.version_id or None,
                "OPERATING-SYSTEM",
                [],
                release.pretty_name,
            )
        )
        relationships.append(_contains(IMAGE, "SPDXRef-OperatingSystem"))
    for number, item in enumerate(data.packages.packages):
        package = item.package
        if package.manager not in PURL_TYPES:
            continue
        spdx_id = f"SPDXRef-Package-{number}"
        packages.append(
            _package(
                spdx_id,
                package.name,
                package.version,
                "LIBRARY",
                [_purl_ref(package_purl(package, release))],
                f"{len(item.kept_files)} kept files; source package {package.source}",
            )
        )
        relationships.append(_contains(IMAGE, spdx_id))
    files: list[dict[str, Any]] = []
    by_path = data.files_by_path()
    file_ids: dict[str, str] = {}

    def file_id(item: SbomFile) -> str:
        known = file_ids.get(item.path)
        if known is None:
            known = file_ids[item.path] = f"SPDXRef-File-{len(file_ids)}"
            files.append(_file(known, item))
        return known

    for number, component in enumerate(data.components):
        spdx_id = f"SPDXRef-Component-{number}"
        package = _component(spdx_id, component)
        own = [by_path[path] for path in component.files if path in by_path]
        relationships.extend(_contains(spdx_id, file_id(item)) for item in own)
        packages.append(_analyzed(package, own))
        relationships.append(_contains(IMAGE, spdx_id))
    unclaimed = data.unclaimed_files()
    relationships.extend(_contains(IMAGE, file_id(item)) for item in unclaimed)
    packages[0] = _analyzed(packages[0], unclaimed)
    document = {
        "spdxVersion": SPDX_VERSION,
        "dataLicense": "CC0-1.0",
        "SPDXID": DOCUMENT,
        "name": subject.name,
        "documentNamespace": f"{NAMESPACE_BASE}/{subject.uuid()}",
        "creationInfo": {
            "created": subject.timestamp(),
            "creators": [f"Tool: slim-{data.tool_version}"],
        },
        "packages": packages,
        "files": files,
        "relationships": relationships,
    }
    return json.dumps(document, separators=(",", ":")) + "\n"
