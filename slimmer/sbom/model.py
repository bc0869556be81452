"""What an SBOM of a micro image says, whatever its format."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from packageurl import PackageURL

from slimmer.components import AppComponent, Ecosystem
from slimmer.context import FileDigests
from slimmer.fileset import Entry
from slimmer.packages import KeptPackages, OsRelease, Package, PackageManager
from slimmer.rootfs import Kind

SLIM_NAMESPACE = uuid.UUID("5b1c0a3e-0b7e-4d53-9f4e-736c696d0001")  # serial numbers
PURL_TYPES = {PackageManager.DPKG: "deb", PackageManager.APK: "apk"}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ImageSubject:
    """The micro image an SBOM is about."""

    name: str  # its first tag (or a name for the context with --context-only)
    tags: tuple[str, ...]
    image_id: str  # "" when slim did not build it (--context-only)
    digests: tuple[str, ...]  # repo@sha256:... once pushed
    source_image: str  # the fat image it was made from
    source_id: str
    created: datetime | None  # the fat image's creation time

    def uuid(self) -> uuid.UUID:
        """Deterministic: the same image gives the same serial number."""
        key = "\0".join([self.name, self.image_id, self.source_id, *self.tags, *self.digests])
        return uuid.uuid5(SLIM_NAMESPACE, key)

    def timestamp(self) -> str:
        return (self.created or EPOCH).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def purl(self) -> str | None:
        """pkg:oci/NAME@DIGEST?repository_url=...&tag=... once pushed."""
        if not self.digests:
            return None
        repository, _, digest = self.digests[0].partition("@")
        qualifiers = {"repository_url": repository}
        last = self.tags[0].rsplit("/", 1)[-1] if self.tags else ""
        if ":" in last:
            qualifiers["tag"] = last.rpartition(":")[2]
        return PackageURL(
            type="oci", name=repository.rsplit("/", 1)[-1], version=digest, qualifiers=qualifiers
        ).to_string()


@dataclass(frozen=True)
class SbomFile:
    """A kept regular file no OS package installed, with its digests."""

    path: str
    size: int
    sha256: str
    sha1: str


@dataclass(frozen=True)
class SbomInput:
    """Everything an SBOM document is written from."""

    subject: ImageSubject
    tool_version: str
    packages: KeptPackages
    components: tuple[AppComponent, ...]
    files: tuple[SbomFile, ...]  # the kept files no OS package owns

    def unclaimed_files(self) -> list[SbomFile]:
        """The files no component claims (listed on their own)."""
        claimed = {path for component in self.components for path in component.files}
        return [item for item in self.files if item.path not in claimed]

    def files_by_path(self) -> dict[str, SbomFile]:
        return {item.path: item for item in self.files}

    @property
    def release(self) -> OsRelease:
        return self.packages.os_release


def package_purl(package: Package, release: OsRelease) -> str:
    """The purl of an OS package as syft and Grype write it, namespaced by
    the image's distribution:
    `pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1?arch=amd64&distro=debian-12&upstream=zlib`
    (upstream names the source package, with its version when it differs)."""
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
    ).to_string()


COMPONENT_PURL_TYPES = {
    Ecosystem.BINARY: "generic",
    Ecosystem.PYPI: "pypi",
    Ecosystem.NPM: "npm",
    Ecosystem.GEM: "gem",
}


def component_purl(component: AppComponent) -> str:
    """pkg:generic/nginx@1.22.1, pkg:pypi/flask@3.0.0 (PEP 503 name),
    pkg:npm/%40scope/name@1.0.0, pkg:gem/rack@3.0.8."""
    name, namespace = component.name, None
    if component.ecosystem is Ecosystem.PYPI:
        name = re.sub(r"[-_.]+", "-", name).lower()
    elif component.ecosystem is Ecosystem.NPM and "/" in name:
        namespace, _, name = name.rpartition("/")
    return PackageURL(
        type=COMPONENT_PURL_TYPES[component.ecosystem],
        namespace=namespace,
        name=name,
        version=component.version,
    ).to_string()


def sbom_files(
    entries: Iterable[Entry], owned: Iterable[str], digests: Mapping[str, FileDigests]
) -> tuple[SbomFile, ...]:
    """The kept regular files no OS package owns, with the digests taken
    while they were copied (copy_validated)."""
    owned_paths = set(owned)
    return tuple(
        SbomFile(entry.path, entry.size, digests[entry.path].sha256, digests[entry.path].sha1)
        for entry in sorted(entries, key=lambda e: e.path)
        if entry.kind is Kind.FILE and entry.path not in owned_paths and entry.path in digests
    )


def text_of(path: str) -> str:
    """Paths are str with surrogateescape; JSON wants text."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
