"""The SBOM: valid CycloneDX 1.5 and SPDX 2.3 (each format's own
validator), about the micro image (its tags, id, digests; the fat image it
came from; slim as the tool), the purls scanners match on, the app's own
components, the files no component claims with the digests copy_validated
took as the bytes passed, and the same bytes for the same image."""

from __future__ import annotations

import hashlib
import io
import json
import os
from datetime import UTC, datetime
from pathlib import Path

from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from spdx_tools.spdx.parser.jsonlikedict.json_like_dict_parser import JsonLikeDictParser
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from slimmer.components import AppComponent, Ecosystem
from slimmer.context import FileDigests, copy_validated, write_rootfs_tar
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
from slimmer.sbom import SbomFormat
from slimmer.sbom.model import (
    ImageSubject,
    SbomFile,
    SbomInput,
    component_purl,
    package_purl,
    sbom_files,
)
from slimmer.sbom.render import render_sbom

DEBIAN = OsRelease(id="debian", version_id="12", version_codename="bookworm")
ZLIB = Package(PackageManager.DPKG, "zlib1g", "1:1.2.13.dfsg-1", "amd64", "zlib", "1:1.2.13.dfsg-1")
LIBC = Package(PackageManager.DPKG, "libc6", "2.36-9+deb12u4", "amd64", "glibc", "2.36-9+deb12u4")
BASH = Package(PackageManager.DPKG, "bash", "5.2.15-2+b2", "amd64", "bash", "5.2.15-2")
MUSL = Package(PackageManager.APK, "musl", "1.2.4-r2", "x86_64", "musl", "1.2.4-r2")
IMAGE_ID = "sha256:" + "a" * 64
SUBJECT = ImageSubject(
    name="registry.example:5000/team/app:micro",
    tags=("registry.example:5000/team/app:micro", "app:1.2"),
    image_id=IMAGE_ID,
    digests=("registry.example:5000/team/app@sha256:" + "b" * 64,),
    source_image="app:fat",
    source_id="sha256:" + "c" * 64,
    created=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
)
NGINX = AppComponent(
    Ecosystem.BINARY,
    "nginx",
    "1.22.1",
    "/opt/nginx/sbin/nginx",
    ("/opt/nginx/sbin/nginx",),
    "cpe:2.3:a:f5:nginx:1.22.1:*:*:*:*:*:*:*",
)
FLASK = AppComponent(
    Ecosystem.PYPI,
    "Flask",
    "3.0.0",
    "/app/venv/lib/python3.11/site-packages/flask-3.0.0.dist-info/METADATA",
    ("/app/venv/lib/python3.11/site-packages/flask/app.py",),
)


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


def sbom_file(path: str, data: bytes) -> SbomFile:
    return SbomFile(
        path, len(data), hashlib.sha256(data).hexdigest(), hashlib.sha1(data).hexdigest()
    )


def example(files: tuple[SbomFile, ...] | None = None) -> SbomInput:
    return SbomInput(
        subject=SUBJECT,
        tool_version="0.1.0",
        packages=kept_debian(),
        components=(FLASK, NGINX),
        files=files
        if files is not None
        else (
            sbom_file("/app/venv/lib/python3.11/site-packages/flask/app.py", b"flask"),
            sbom_file("/opt/app/run", b"hello"),
            sbom_file("/opt/nginx/sbin/nginx", b"nginx/1.22.1"),
            sbom_file(os.fsdecode(b"/opt/app/caf\xe9"), b"x"),
        ),
    )


def test_purls_are_what_scanners_write() -> None:
    assert package_purl(ZLIB, DEBIAN) == (
        "pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1?arch=amd64&distro=debian-12&upstream=zlib"
    )
    assert package_purl(BASH, DEBIAN) == (
        "pkg:deb/debian/bash@5.2.15-2%2Bb2?arch=amd64&distro=debian-12&upstream=bash%405.2.15-2"
    )
    alpine = OsRelease(id="alpine", version_id="3.19.1")
    assert (
        package_purl(MUSL, alpine)
        == "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64&distro=alpine-3.19.1"
    )
    assert component_purl(NGINX) == "pkg:generic/nginx@1.22.1"
    assert component_purl(FLASK) == "pkg:pypi/flask@3.0.0"
    scoped = AppComponent(Ecosystem.NPM, "@scope/left-pad", "1.3.0", "x", ())
    assert component_purl(scoped) == "pkg:npm/%40scope/left-pad@1.3.0"
    assert SUBJECT.purl() == (
        f"pkg:oci/app@sha256:{'b' * 64}?repository_url=registry.example:5000/team/app&tag=micro"
    )


def test_cyclonedx_describes_the_micro_image() -> None:
    text = render_sbom(example(), SbomFormat.CYCLONEDX)
    assert JsonStrictValidator(SchemaVersion.V1_5).validate_str(text) is None
    document = json.loads(text)
    metadata = document["metadata"]
    assert metadata["timestamp"] == "2026-01-02T03:04:05Z"
    assert metadata["tools"]["components"][0]["name"] == "slim"
    subject = metadata["component"]
    assert (subject["type"], subject["name"], subject["version"]) == (
        "container",
        SUBJECT.name,
        IMAGE_ID,
    )
    properties = {(p["name"], p["value"]) for p in subject["properties"]}
    assert ("slim:image:tag", "app:1.2") in properties
    assert ("slim:image:digest", SUBJECT.digests[0]) in properties
    assert ("slim:source:image", "app:fat") in properties
    by_type: dict[str, list[dict]] = {}
    for component in document["components"]:
        by_type.setdefault(component["type"], []).append(component)
    assert [c["name"] for c in by_type["operating-system"]] == ["debian"]
    libraries = {c["name"]: c for c in by_type["library"]}
    assert set(libraries) == {"bash", "libc6", "zlib1g", "Flask"}
    assert libraries["Flask"]["purl"] == "pkg:pypi/flask@3.0.0"
    (nginx,) = by_type["application"]
    assert nginx["purl"] == "pkg:generic/nginx@1.22.1" and nginx["cpe"] == NGINX.cpe
    files = {c["name"]: c for c in by_type["file"]}
    # files a component claims are its evidence, not listed again
    assert set(files) == {"/opt/app/run", "/opt/app/caf\\xe9"}
    assert files["/opt/app/run"]["hashes"] == [
        {"alg": "SHA-256", "content": hashlib.sha256(b"hello").hexdigest()},
        {"alg": "SHA-1", "content": hashlib.sha1(b"hello").hexdigest()},
    ]


def test_spdx_describes_the_micro_image() -> None:
    text = render_sbom(example(), SbomFormat.SPDX)
    document = JsonLikeDictParser().parse(json.loads(text))
    assert validate_full_spdx_document(document, "SPDX-2.3") == []
    data = json.loads(text)
    assert data["creationInfo"]["creators"] == ["Tool: slim-0.1.0"]
    packages = {p["SPDXID"]: p for p in data["packages"]}
    image = packages["SPDXRef-Image"]
    assert (image["name"], image["versionInfo"], image["primaryPackagePurpose"]) == (
        SUBJECT.name,
        IMAGE_ID,
        "CONTAINER",
    )
    locators = {r["referenceLocator"] for p in data["packages"] for r in p.get("externalRefs", [])}
    assert package_purl(ZLIB, DEBIAN) in locators and NGINX.cpe in locators
    assert "pkg:pypi/flask@3.0.0" in locators
    names = {f["fileName"] for f in data["files"]}
    assert "./opt/app/run" in names and "./opt/nginx/sbin/nginx" in names
    contains = {(r["spdxElementId"], r["relatedSpdxElement"]) for r in data["relationships"]}
    nginx = next(p["SPDXID"] for p in data["packages"] if p["name"] == "nginx")
    nginx_file = next(f["SPDXID"] for f in data["files"] if f["fileName"].endswith("sbin/nginx"))
    assert (nginx, nginx_file) in contains and ("SPDXRef-Image", nginx) in contains


def test_same_image_same_bytes_another_image_another_serial() -> None:
    for form in SbomFormat:
        first, again = render_sbom(example(), form), render_sbom(example(), form)
        assert first == again
        other = SbomInput(
            subject=ImageSubject(**{**SUBJECT.__dict__, "image_id": "sha256:" + "d" * 64}),
            tool_version="0.1.0",
            packages=kept_debian(),
            components=(),
            files=(),
        )
        assert render_sbom(other, form) != first


def test_files_get_the_digests_taken_while_copying(tmp_path: Path) -> None:
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
    digests: dict[str, FileDigests] = {}
    copy_validated(collected, selection, io.BytesIO(), digests)
    run = b"#!/bin/sh\necho run\n"
    expected = FileDigests(hashlib.sha256(run).hexdigest(), hashlib.sha1(run).hexdigest())
    assert digests["/opt/app/run"] == digests["/opt/app/run-again"] == expected
    assert digests["/usr/lib/libz.so.1"].sha256 == hashlib.sha256(b"zlib").hexdigest()
    found = sbom_files(selection.entries, ["/usr/lib/libz.so.1"], digests)
    assert [(f.path, f.sha256, f.sha1) for f in found] == [
        ("/opt/app/run", expected.sha256, expected.sha1),
        ("/opt/app/run-again", expected.sha256, expected.sha1),
    ]
