"""The micro image's SBOM (CycloneDX 1.5 JSON, written with the CycloneDX
project's own library): the OS packages that have a file in the image,
with the purls scanners match vulnerabilities on, the operating system, and
the app's own files (those no package installed) with their sha256.

purls follow what syft and Grype write for Debian:
`pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1?arch=amd64&distro=debian-12&upstream=zlib`
(the upstream qualifier names the source package, with its version when it
differs), and for Alpine `pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64&distro=alpine-3.19.1`.
The document is deterministic: its serial number is derived from the image
and its timestamp is given by the caller (the image's creation time).
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output.json import JsonV1Dot5
from packageurl import PackageURL

from slimmer.fileset import Entry
from slimmer.packages import KeptPackages, OsRelease, Package, PackageManager
from slimmer.rootfs import Kind

SCHEMA_VERSION = "1.5"
SLIM_NAMESPACE = uuid.UUID("5b1c0a3e-0b7e-4d53-9f4e-736c696d0001")  # serial numbers
PURL_TYPES = {PackageManager.DPKG: "deb", PackageManager.APK: "apk"}


@dataclass(frozen=True)
class AppFile:
    """A file of the image that no package installed."""

    path: str
    size: int
    sha256: str


def package_purl(package: Package, release: OsRelease) -> PackageURL:
    """The purl of an OS package, namespaced by the image's distribution."""
    namespace = release.id or ("debian" if package.manager is PackageManager.DPKG else "alpine")
    qualifiers: dict[str, str] = {}
    if package.architecture:
        qualifiers["arch"] = package.architecture
    if release.purl_distro:
        qualifiers["distro"] = release.purl_distro
    if package.source and package.source != package.name:
        qualifiers["upstream"] = package.source
    if package.source_version and package.source_version != package.version:
        qualifiers["upstream"] = f"{package.source}@{package.source_version}"
    return PackageURL(
        type=PURL_TYPES[package.manager],
        namespace=namespace,
        name=package.name,
        version=package.version,
        qualifiers=qualifiers,
    )


def app_files(
    entries: Iterable[Entry], owned: Iterable[str], digests: Mapping[str, str]
) -> list[AppFile]:
    """The regular files no package owns, with their digests (from
    copy_validated): the app's own files."""
    owned_paths = set(owned)
    return [
        AppFile(entry.path, entry.size, digests[entry.path])
        for entry in entries
        if entry.kind is Kind.FILE and entry.path not in owned_paths and entry.path in digests
    ]


def _text(path: str) -> str:
    """Paths are str with surrogateescape; JSON wants text."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def build_sbom(
    *,
    image: str,
    image_id: str,
    kept: KeptPackages,
    files: Iterable[AppFile],
    created: datetime | None = None,
) -> str:
    """The SBOM of a micro image as CycloneDX 1.5 JSON text."""
    bom = Bom(serial_number=uuid.uuid5(SLIM_NAMESPACE, f"{image}\0{image_id}"))
    bom.metadata.timestamp = created or datetime(1970, 1, 1, tzinfo=UTC)
    root = Component(
        name=image, version=image_id or None, type=ComponentType.CONTAINER, bom_ref="image"
    )
    bom.metadata.component = root
    components: list[Component] = []
    release = kept.os_release
    if release.id:
        components.append(
            Component(
                name=release.id,
                version=release.version_id or None,
                description=release.pretty_name or None,
                type=ComponentType.OPERATING_SYSTEM,
                bom_ref=f"os:{release.id}",
            )
        )
    for item in kept.packages:
        package = item.package
        if package.manager not in PURL_TYPES:
            continue
        purl = package_purl(package, release)
        component = Component(
            name=package.name,
            version=package.version,
            type=ComponentType.LIBRARY,
            purl=purl,
            bom_ref=purl.to_string(),
        )
        component.properties.add(Property(name="slim:package:manager", value=package.manager))
        component.properties.add(Property(name="slim:package:source", value=package.source))
        component.properties.add(
            Property(name="slim:package:source-version", value=package.source_version)
        )
        component.properties.add(
            Property(name="slim:package:kept-files", value=str(len(item.kept_files)))
        )
        components.append(component)
    for app_file in sorted(files, key=lambda f: f.path):
        name = _text(app_file.path)
        component = Component(name=name, type=ComponentType.FILE, bom_ref=f"file:{name}")
        component.hashes.add(HashType(alg=HashAlgorithm.SHA_256, content=app_file.sha256))
        component.properties.add(Property(name="slim:file:size", value=str(app_file.size)))
        components.append(component)
    for component in components:
        bom.components.add(component)
    bom.register_dependency(root, components)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the library warns about optional graph data
        return JsonV1Dot5(bom).output_as_string(indent=1) + "\n"
