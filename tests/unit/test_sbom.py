"""The SBOM: valid CycloneDX 1.5 (the project's own JSON schema), the purls
scanners match on, the app's files with the digests copy_validated took as
the bytes passed, and the same bytes for the same image."""

from __future__ import annotations

import hashlib
import io
import json
import os
from datetime import UTC, datetime
from pathlib import Path

from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from slimmer.context import copy_validated, write_rootfs_tar
from slimmer.fileset import SelectionRequest, select_files
from slimmer.packages import (
    FileRecord,
    KeptPackage,
    KeptPackages,
    OsRelease,
    Package,
    PackageManager,
)
from slimmer.rootfs import RootFS
from slimmer.sbom import AppFile, app_files, build_sbom, package_purl

DEBIAN = OsRelease(id="debian", version_id="12", version_codename="bookworm")
ZLIB = Package(PackageManager.DPKG, "zlib1g", "1:1.2.13.dfsg-1", "amd64", "zlib", "1:1.2.13.dfsg-1")
LIBC = Package(PackageManager.DPKG, "libc6", "2.36-9+deb12u4", "amd64", "glibc", "2.36-9+deb12u4")
BASH = Package(PackageManager.DPKG, "bash", "5.2.15-2+b2", "amd64", "bash", "5.2.15-2")
MUSL = Package(PackageManager.APK, "musl", "1.2.4-r2", "x86_64", "musl", "1.2.4-r2")


def kept_debian() -> KeptPackages:
    lib = "/usr/lib/x86_64-linux-gnu"
    return KeptPackages(
        PackageManager.DPKG,
        (
            KeptPackage(
                LIBC, (FileRecord("/lib/x86_64-linux-gnu/libc.so.6", f"{lib}/libc.so.6", False),)
            ),
            KeptPackage(
                ZLIB, (FileRecord("/lib/x86_64-linux-gnu/libz.so.1", f"{lib}/libz.so.1", False),)
            ),
            KeptPackage(BASH, (FileRecord("/bin/bash", "/usr/bin/bash", False),)),
        ),
        DEBIAN,
    )


def test_purls_are_what_scanners_write() -> None:
    assert package_purl(ZLIB, DEBIAN).to_string() == (
        "pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1?arch=amd64&distro=debian-12&upstream=zlib"
    )
    assert package_purl(BASH, DEBIAN).to_string() == (
        "pkg:deb/debian/bash@5.2.15-2%2Bb2?arch=amd64&distro=debian-12&upstream=bash%405.2.15-2"
    )
    alpine = OsRelease(id="alpine", version_id="3.19.1")
    assert package_purl(MUSL, alpine).to_string() == (
        "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64&distro=alpine-3.19.1"
    )


def test_sbom_is_valid_cyclonedx_and_lists_packages_and_files() -> None:
    files = [
        AppFile("/opt/app/bin/app", 5, hashlib.sha256(b"hello").hexdigest()),
        AppFile(os.fsdecode(b"/opt/app/caf\xe9"), 1, "0" * 64),
    ]
    text = build_sbom(
        image="app:micro",
        image_id="sha256:" + "a" * 64,
        kept=kept_debian(),
        files=files,
        created=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    assert JsonStrictValidator(SchemaVersion.V1_5).validate_str(text) is None
    document = json.loads(text)
    assert document["specVersion"] == "1.5"
    assert document["metadata"]["component"]["name"] == "app:micro"
    assert document["metadata"]["timestamp"].startswith("2026-01-02T03:04:05")
    by_type: dict[str, list[dict]] = {}
    for component in document["components"]:
        by_type.setdefault(component["type"], []).append(component)
    assert [c["name"] for c in by_type["operating-system"]] == ["debian"]
    assert sorted(c["name"] for c in by_type["library"]) == ["bash", "libc6", "zlib1g"]
    files_by_name = {c["name"]: c for c in by_type["file"]}
    assert files_by_name["/opt/app/bin/app"]["hashes"] == [
        {"alg": "SHA-256", "content": hashlib.sha256(b"hello").hexdigest()}
    ]
    assert "/opt/app/caf\\xe9" in files_by_name  # undecodable bytes stay visible


def test_same_image_same_bytes() -> None:
    def make(image_id: str) -> str:
        return build_sbom(image="app:micro", image_id=image_id, kept=kept_debian(), files=[])

    assert make("sha256:1") == make("sha256:1")
    assert (
        json.loads(make("sha256:1"))["serialNumber"] != json.loads(make("sha256:2"))["serialNumber"]
    )


def test_app_files_get_the_digests_taken_while_copying(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "opt/app").mkdir(parents=True)
    (root / "opt/app/run").write_bytes(b"#!/bin/sh\necho run\n")
    os.link(root / "opt/app/run", root / "opt/app/run-again")
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/libz.so.1").write_bytes(b"zlib")
    fs = RootFS(root)
    selection = select_files(fs, SelectionRequest(includes=["/opt/app", "/usr/lib/libz.so.1"]))
    collected = io.BytesIO()
    write_rootfs_tar(fs, selection, collected)
    collected.seek(0)
    digests: dict[str, str] = {}
    copy_validated(collected, selection, io.BytesIO(), digests)
    expected = hashlib.sha256(b"#!/bin/sh\necho run\n").hexdigest()
    assert digests["/opt/app/run"] == digests["/opt/app/run-again"] == expected
    assert digests["/usr/lib/libz.so.1"] == hashlib.sha256(b"zlib").hexdigest()
    found = app_files(selection.entries, ["/usr/lib/libz.so.1"], digests)
    assert [(f.path, f.sha256) for f in found] == [
        ("/opt/app/run", expected),
        ("/opt/app/run-again", expected),
    ]
