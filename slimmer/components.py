"""The app's own components among the kept files: what a scanner fed the
SBOM should see besides the OS packages. Runs in the collecting sensor,
where the whole image is (a package's metadata need not be kept to name
it), over a RootFS; nothing from the image is run or imported.

- Binaries no package installed, by the version string they carry, as
  syft's classifiers find them (nginx, Apache httpd, PostgreSQL, Redis,
  Node.js, CPython, BusyBox, curl, OpenSSL): `pkg:generic/nginx@1.22.1`
  and the CPE scanners match vulnerabilities on.
- Python distributions (`*.dist-info`: METADATA names it, RECORD lists its
  files) with a kept file: `pkg:pypi/flask@3.0.0`.
- Node packages (`node_modules/[@scope/]name/package.json`) with a kept
  file: `pkg:npm/%40scope/name@1.2.3`.
- Ruby gems (`gems/NAME-VERSION/` with `specifications/NAME-VERSION.gemspec`)
  with a kept file: `pkg:gem/rack@3.0.8`.

Files an OS package installed are never claimed here: the package records
cover them. The work is linear in the kept files (plus one RECORD or
package.json per component), and bounded in bytes read.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from slimmer.errors import PathError
from slimmer.rootfs import RootFS, basename, parent

MAX_METADATA_BYTES = 4 * 1024 * 1024  # METADATA, RECORD, package.json
MAX_SCANNED_BYTES = 256 * 1024 * 1024  # of one binary, looking for its version
SCAN_CHUNK = 1 << 20
SCAN_OVERLAP = 512


class Ecosystem(StrEnum):
    BINARY = "binary"
    PYPI = "pypi"
    NPM = "npm"
    GEM = "gem"


@dataclass(frozen=True)
class AppComponent:
    """A component of the app: its ecosystem, name (an npm name with its
    @scope), version (and CPE for a binary), how it was found (`evidence`:
    the file that says so) and its kept files. The host makes its purl."""

    ecosystem: Ecosystem
    name: str
    version: str
    evidence: str
    files: tuple[str, ...]
    cpe: str | None = None


# -- binaries -------------------------------------------------------------------


@dataclass(frozen=True)
class Classifier:
    """A binary found by its file name and a version string in its bytes."""

    name: str
    file_name: re.Pattern[str]
    version: re.Pattern[bytes]
    cpe: str  # with {version}


CLASSIFIERS = (
    Classifier(
        "nginx",
        re.compile(r"nginx"),
        re.compile(rb"nginx/(\d+\.\d+\.\d+)"),
        "cpe:2.3:a:f5:nginx:{version}:*:*:*:*:*:*:*",
    ),
    Classifier(
        "httpd",
        re.compile(r"httpd|apache2"),
        re.compile(rb"Apache/(\d+\.\d+\.\d+)"),
        "cpe:2.3:a:apache:http_server:{version}:*:*:*:*:*:*:*",
    ),
    Classifier(
        "postgresql",
        re.compile(r"postgres"),
        re.compile(rb"\(PostgreSQL\) (\d+\.\d+(?:\.\d+)?)"),
        "cpe:2.3:a:postgresql:postgresql:{version}:*:*:*:*:*:*:*",
    ),
    Classifier(
        "redis",
        re.compile(r"redis-server"),
        re.compile(rb"\x00(\d+\.\d+\.\d+)\x00[a-z0-9]{12,15}-[0-9]{19}\x00"),
        "cpe:2.3:a:redis:redis:{version}:*:*:*:*:*:*:*",
    ),
    Classifier(
        "node",
        re.compile(r"node(js)?"),
        re.compile(rb"node\.js/v(\d+\.\d+\.\d+)"),
        "cpe:2.3:a:nodejs:node.js:{version}:*:*:*:*:*:*:*",
    ),
    Classifier(
        "python",
        re.compile(r"python3(\.\d+)?|libpython3\.\d+\.so(\.[\d.]+)?"),
        re.compile(rb"\x00(3\.\d+\.\d+)(?:(?:a|b|rc)\d+)?[\x00 ]"),
        "cpe:2.3:a:python:python:{version}:*:*:*:*:*:*:*",
    ),
    Classifier(
        "busybox",
        re.compile(r"busybox"),
        re.compile(rb"BusyBox v(\d+\.\d+\.\d+)"),
        "cpe:2.3:a:busybox:busybox:{version}:*:*:*:*:*:*:*",
    ),
    Classifier(
        "curl",
        re.compile(r"curl|libcurl\.so(\.[\d.]+)?"),
        re.compile(rb"curl/(\d+\.\d+\.\d+)"),
        "cpe:2.3:a:haxx:curl:{version}:*:*:*:*:*:*:*",
    ),
    Classifier(
        "openssl",
        re.compile(r"openssl|lib(crypto|ssl)\.so(\.[\d.]+)?"),
        re.compile(rb"OpenSSL (\d+\.\d+\.\d+[a-z]?)\s"),
        "cpe:2.3:a:openssl:openssl:{version}:*:*:*:*:*:*:*",
    ),
)


def scan_version(fs: RootFS, path: str, pattern: re.Pattern[bytes]) -> str | None:
    """The first version the pattern finds in a file, read in chunks that
    overlap so a string across two chunks is found; bounded in bytes."""
    try:
        _, fd = fs.open_file(path)
    except PathError:
        return None
    with open(fd, "rb") as handle:
        tail = b""
        read = 0
        while read < MAX_SCANNED_BYTES:
            chunk = handle.read(SCAN_CHUNK)
            if not chunk:
                return None
            read += len(chunk)
            window = tail + chunk
            found = pattern.search(window)
            if found:
                return found.group(1).decode("ascii", "replace")
            tail = window[-SCAN_OVERLAP:]
    return None


def classify_binaries(fs: RootFS, files: Iterable[str]) -> list[AppComponent]:
    components = []
    for path in files:
        name = basename(path)
        for classifier in CLASSIFIERS:
            if not classifier.file_name.fullmatch(name):
                continue
            version = scan_version(fs, path, classifier.version)
            if version:
                components.append(
                    AppComponent(
                        Ecosystem.BINARY,
                        classifier.name,
                        version,
                        path,
                        (path,),
                        classifier.cpe.format(version=version),
                    )
                )
                break
    return components


# -- language packages ------------------------------------------------------------

_SITE = re.compile(r"^(.*/(?:site|dist)-packages)/")
_GEM = re.compile(r"^(.*/gems)/([^/]+)-(\d[^/]*)/")


def _read_text(fs: RootFS, path: str) -> str | None:
    try:
        data = fs.read_bytes(path, limit=MAX_METADATA_BYTES + 1)
    except PathError:
        return None
    if len(data) > MAX_METADATA_BYTES:
        return None
    return data.decode("utf-8", "replace")


def _metadata_fields(text: str) -> dict[str, str]:
    """The header of a core-metadata file (email style, up to the body)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break
        key, sep, value = line.partition(":")
        if sep and not line[:1].isspace():
            fields.setdefault(key.strip().lower(), value.strip())
    return fields


def python_distributions(fs: RootFS, files: Sequence[str]) -> list[AppComponent]:
    """Distributions in each site-packages that holds kept files: the kept
    files RECORD lists for each."""
    by_root: dict[str, list[str]] = {}
    for path in files:
        found = _SITE.match(path)
        if found:
            by_root.setdefault(found.group(1), []).append(path)
    components = []
    for root, kept in sorted(by_root.items()):
        try:
            names = fs.listdir(fs.resolve(root).path)
        except (PathError, OSError):
            continue
        owner: dict[str, str] = {}
        metadata: dict[str, tuple[str, str, str]] = {}
        for entry in names:
            if not entry.endswith(".dist-info"):
                continue
            directory = f"{root}/{entry}"
            fields = _metadata_fields(_read_text(fs, f"{directory}/METADATA") or "")
            if not fields.get("name") or not fields.get("version"):
                continue
            metadata[entry] = (fields["name"], fields["version"], f"{directory}/METADATA")
            for row in csv.reader(io.StringIO(_read_text(fs, f"{directory}/RECORD") or "")):
                if row:
                    owner.setdefault(f"{root}/{row[0]}", entry)
        claimed: dict[str, list[str]] = {}
        for path in kept:
            if path in owner:
                claimed.setdefault(owner[path], []).append(path)
        for entry, paths in sorted(claimed.items()):
            name, version, evidence = metadata[entry]
            components.append(
                AppComponent(Ecosystem.PYPI, name, version, evidence, tuple(sorted(paths)))
            )
    return components


def node_packages(fs: RootFS, files: Sequence[str]) -> list[AppComponent]:
    """Packages under node_modules that hold kept files, by the innermost
    node_modules directory each file is in."""
    by_package: dict[str, list[str]] = {}
    for path in files:
        innermost = _innermost_node_package(path)
        if innermost:
            by_package.setdefault(innermost, []).append(path)
    components = []
    for directory, paths in sorted(by_package.items()):
        manifest = f"{directory}/package.json"
        try:
            data = json.loads(_read_text(fs, manifest) or "null")
        except ValueError:
            continue
        if not isinstance(data, dict):
            continue
        name, version = data.get("name"), data.get("version")
        if not isinstance(name, str) or not isinstance(version, str) or not name or not version:
            continue
        components.append(
            AppComponent(Ecosystem.NPM, name, version, manifest, tuple(sorted(paths)))
        )
    return components


def _innermost_node_package(path: str) -> str | None:
    marker = "/node_modules/"
    at = path.rfind(marker)
    if at < 0:
        return None
    rest = path[at + len(marker) :].split("/")
    depth = 2 if rest[0].startswith("@") else 1
    if len(rest) <= depth:
        return None
    return path[: at + len(marker)] + "/".join(rest[:depth])


def ruby_gems(fs: RootFS, files: Sequence[str]) -> list[AppComponent]:
    """Installed gems (gems/NAME-VERSION/ beside specifications/) that hold
    kept files."""
    by_gem: dict[tuple[str, str, str], list[str]] = {}
    for path in files:
        found = _GEM.match(path)
        if found:
            by_gem.setdefault((found.group(1), found.group(2), found.group(3)), []).append(path)
    components = []
    for (gems_dir, name, version), paths in sorted(by_gem.items()):
        spec = f"{parent(gems_dir)}/specifications/{name}-{version}.gemspec"
        if not fs.exists(spec):
            continue
        components.append(AppComponent(Ecosystem.GEM, name, version, spec, tuple(sorted(paths))))
    return components


def app_components(
    fs: RootFS, kept_files: Iterable[str], owned: Mapping[str, object] | set[str]
) -> tuple[AppComponent, ...]:
    """The components of the kept regular files that no OS package owns."""
    files = sorted(path for path in kept_files if path not in owned)
    found = [
        *python_distributions(fs, files),
        *node_packages(fs, files),
        *ruby_gems(fs, files),
    ]
    claimed = {path for component in found for path in component.files}
    found += classify_binaries(fs, [path for path in files if path not in claimed])
    return tuple(sorted(found, key=lambda c: (c.ecosystem.value, c.name, c.version, c.evidence)))
