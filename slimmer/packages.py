"""The image's OS package database: who owns which path, and the trimmed
package records a micro image carries so scanners see what is in it.

Read through RootFS, as untrusted input: every file is read with a size
bound, a malformed record is skipped with a warning, nothing here raises on
bad content. Supported:

- dpkg: `/var/lib/dpkg/status` (stanzas) with `/var/lib/dpkg/info/<pkg>[:arch].list`
  for the files and `<pkg>[:arch].md5sums` for their digests, plus
  `/var/lib/dpkg/diversions`; and the distroless layout,
  `/var/lib/dpkg/status.d/<pkg>` with `<pkg>.md5sums` beside it.
- apk: `/lib/apk/db/installed` (P:, V:, A:, o:, F:/R: records...).
- rpm is only detected (its database is a sqlite or Berkeley DB of binary
  headers): a warning says its packages are not read.

Package databases name files as they were installed (`/lib/x86_64-linux-gnu/
libc.so.6`); on a merged-/usr image /lib is a link to usr/lib, so every
listed path is made canonical by resolving its directory inside the root.
The last component stays as listed: a package owns its symlinks, not their
targets.

The records the micro image gets for the kept packages are written by
`slimmer.records`. Values are str with surrogateescape: a record that is
not UTF-8 keeps its bytes.
"""

from __future__ import annotations

import logging
import re
import stat
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from slimmer import wire
from slimmer.errors import PathError
from slimmer.rootfs import RootFS, basename, join, parent

log = logging.getLogger(__name__)

DPKG_DIR = "/var/lib/dpkg"
DPKG_STATUS = f"{DPKG_DIR}/status"
DPKG_STATUS_D = f"{DPKG_DIR}/status.d"
DPKG_INFO = f"{DPKG_DIR}/info"
DPKG_DIVERSIONS = f"{DPKG_DIR}/diversions"
APK_INSTALLED = "/lib/apk/db/installed"
RPM_DATABASES = (
    "/var/lib/rpm/rpmdb.sqlite",
    "/var/lib/rpm/Packages",
    "/var/lib/rpm/Packages.db",
    "/usr/lib/sysimage/rpm/rpmdb.sqlite",
    "/usr/lib/sysimage/rpm/Packages.db",
)
OS_RELEASE_PATHS = ("/etc/os-release", "/usr/lib/os-release")
# What scanners read to know the distribution before they read its package
# database (Trivy: os-release or debian_version/alpine-release): a micro
# image with package records keeps these too.
RELEASE_FILES = (*OS_RELEASE_PATHS, "/etc/debian_version", "/etc/alpine-release")

# Bounds on what is read from an image: far above any real database
# (Debian's full archive installed is a status file of ~60 MB).
MAX_DATABASE_BYTES = 128 * 1024 * 1024
MAX_LIST_BYTES = 32 * 1024 * 1024
MAX_STANZA_BYTES = 4 * 1024 * 1024
MAX_PACKAGES = 100_000
MAX_OS_RELEASE_BYTES = 64 * 1024
MAX_WARNINGS = 200

# dpkg's own rules for names (lib/dpkg/parse.c, arch.c): what may become a
# file name under status.d. Anything else is refused, so no record can name
# `../x` or a path with a slash.
DPKG_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]*$")
DPKG_ARCH = re.compile(r"^[a-z0-9][a-z0-9-]*$")
APK_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")
FIELD_NAME = re.compile(r"^[!-9;-~][!-9;-~]*$")  # printable ASCII, no colon or space
MD5_HEX = re.compile(r"^[0-9a-f]{32}$")
# Source: name (version)
SOURCE_FIELD = re.compile(r"^(\S+)(?:\s+\((\S+)\))?$")
# dpkg states with the package's files on disk
INSTALLED_STATES = frozenset(
    {"installed", "half-configured", "unpacked", "half-installed", "triggers-awaited",
     "triggers-pending"}
)  # fmt: skip
APK_FILE_ATTRIBUTES = ("a", "Z")  # follow an R: line
APK_DIR_ATTRIBUTES = ("M",)  # follow an F: line


class PackageManager(StrEnum):
    DPKG = "dpkg"
    APK = "apk"


@dataclass(frozen=True)
class Package:
    """One installed package, with its record as the database holds it."""

    manager: PackageManager
    name: str
    version: str
    architecture: str
    source: str  # the source package (the binary's own name when not given)
    source_version: str
    essential: bool = False
    priority: str = ""  # dpkg: required, important, standard, optional, extra
    # The record's header fields in order (dpkg stanza fields, apk letters).
    # Multi-line dpkg values keep their continuation lines (" text").
    fields: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> str:
        """Unique within one database: name:arch for dpkg (multi-arch)."""
        if self.manager is PackageManager.DPKG:
            return f"{self.name}:{self.architecture}"
        return self.name

    def field(self, name: str) -> str | None:
        wanted = name.lower()
        return next((v for k, v in self.fields if k.lower() == wanted), None)


@dataclass(frozen=True)
class FileRecord:
    """One path a package lists."""

    listed: str  # as the database names it, absolute ("/lib/x86_64-linux-gnu/libc.so.6")
    path: str  # canonical in the image ("/usr/lib/x86_64-linux-gnu/libc.so.6")
    directory: bool  # the database lists it as a directory
    digest: str | None = None  # dpkg: md5 hex; apk: its Z: value ("Q1" + base64 sha1)
    # apk: the attribute lines after the record (a:/Z: after R:, M: after F:)
    attributes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class OsRelease:
    """The fields of /etc/os-release that name a distribution release."""

    id: str = ""
    version_id: str = ""
    version_codename: str = ""
    id_like: tuple[str, ...] = ()
    pretty_name: str = ""

    @property
    def purl_distro(self) -> str | None:
        """The purl `distro` qualifier scanners use: debian-12, alpine-3.19.1."""
        if not self.id:
            return None
        return f"{self.id}-{self.version_id}" if self.version_id else self.id


class _Warnings:
    """Warnings about the database, bounded: a broken database of 100 000
    packages must not make 100 000 log lines."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.dropped = 0

    def add(self, message: str) -> None:
        if len(self.items) < MAX_WARNINGS:
            self.items.append(message)
        else:
            self.dropped += 1

    def final(self) -> tuple[str, ...]:
        if self.dropped:
            return (*self.items, f"{self.dropped} more warnings about the package database")
        return tuple(self.items)


def _read_bounded(fs: RootFS, path: str, limit: int, warnings: _Warnings) -> bytes | None:
    """A file's bytes, or None (with a warning) when missing-but-expected,
    unreadable or larger than `limit`."""
    try:
        data = fs.read_bytes(path, limit=limit + 1)
    except PathError as exc:
        warnings.add(f"{path}: cannot read ({exc.message})")
        return None
    if len(data) > limit:
        warnings.add(f"{path}: larger than {limit} bytes, not read")
        return None
    return data


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


class _Canonicalizer:
    """Listed paths -> canonical image paths: the directory part is resolved
    inside the root (memoised per directory), the last component is kept."""

    def __init__(self, fs: RootFS) -> None:
        self.fs = fs
        self._dirs: dict[str, str] = {}

    def __call__(self, listed: str) -> str:
        listed = "/" + "/".join(c for c in listed.split("/") if c not in ("", "."))
        if listed == "/":
            return "/"
        directory = parent(listed)
        canonical_dir = self._dirs.get(directory)
        if canonical_dir is None:
            try:
                canonical_dir = self.fs.resolve(directory).path
            except PathError:
                canonical_dir = directory  # not in the image: nothing kept can be there
            self._dirs[directory] = canonical_dir
        name = basename(listed)
        if name == "..":
            return parent(canonical_dir)
        return join(canonical_dir, name)


# -- dpkg ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Stanza:
    fields: tuple[tuple[str, str], ...]


def parse_deb822(text: str, origin: str, warnings: _Warnings) -> Iterator[_Stanza]:
    """The stanzas of a dpkg database file. A stanza with a line that is not
    `Field: value` or a continuation, a duplicate field, or more than
    MAX_STANZA_BYTES is skipped whole, with a warning."""
    fields: list[tuple[str, str]] = []
    problem: str | None = None
    size = 0
    number = 0
    start = 1

    def finish() -> Iterator[_Stanza]:
        if problem is not None:
            warnings.add(f"{origin}: stanza at line {start} skipped: {problem}")
        elif fields:
            yield _Stanza(tuple(fields))

    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            yield from finish()
            fields, problem, size, start = [], None, 0, number + 1
            continue
        if problem is not None:
            continue
        size += len(line) + 1
        if size > MAX_STANZA_BYTES:
            problem = f"larger than {MAX_STANZA_BYTES} bytes"
            continue
        if line[0] in " \t":
            if not fields:
                problem = "a continuation line before any field"
                continue
            name, value = fields[-1]
            fields[-1] = (name, f"{value}\n{line}")
            continue
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not FIELD_NAME.match(name) or name.startswith(("#", "-")):
            problem = f"line {number} is not a field"
            continue
        if any(existing.lower() == name.lower() for existing, _ in fields):
            problem = f"duplicate field {name}"
            continue
        fields.append((name, value.strip()))
    yield from finish()


def _dpkg_package(stanza: _Stanza, origin: str, warnings: _Warnings) -> Package | None:
    values = {k.lower(): v for k, v in stanza.fields}
    name = values.get("package", "")
    version = values.get("version", "")
    architecture = values.get("architecture", "")
    if not DPKG_NAME.match(name):
        warnings.add(f"{origin}: a stanza with package name {name!r} skipped")
        return None
    status = values.get("status")
    if status is not None:
        words = status.split()
        if len(words) != 3 or words[2] not in INSTALLED_STATES:
            return None  # not-installed, config-files: nothing of it on disk to keep
    if not version or any(c.isspace() for c in version):
        warnings.add(f"{origin}: package {name} has no usable Version; skipped")
        return None
    if not DPKG_ARCH.match(architecture):
        warnings.add(f"{origin}: package {name} has Architecture {architecture!r}; skipped")
        return None
    source, source_version = name, version
    if "source" in values:
        match = SOURCE_FIELD.match(values["source"].strip())
        if match is None:
            warnings.add(f"{origin}: package {name} has an unreadable Source; its name is used")
        else:
            source = match.group(1)
            source_version = match.group(2) or version
    return Package(
        manager=PackageManager.DPKG,
        name=name,
        version=version,
        architecture=architecture,
        source=source,
        source_version=source_version,
        essential=values.get("essential", "").lower() == "yes",
        priority=values.get("priority", ""),
        fields=stanza.fields,
    )


def _read_diversions(fs: RootFS, warnings: _Warnings) -> dict[str, tuple[str, str]]:
    """from -> (to, diverting package); ':' diverts for every package."""
    if not fs.exists(DPKG_DIVERSIONS):
        return {}
    data = _read_bounded(fs, DPKG_DIVERSIONS, MAX_LIST_BYTES, warnings)
    if data is None:
        return {}
    lines = _text(data).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) % 3:
        warnings.add(f"{DPKG_DIVERSIONS}: not triples of lines; the last one is ignored")
    return {
        lines[i]: (lines[i + 1], lines[i + 2])
        for i in range(0, len(lines) - len(lines) % 3, 3)
        if lines[i].startswith("/") and lines[i + 1].startswith("/")
    }


def _info_file(fs: RootFS, directory: str, package: Package, suffix: str) -> str | None:
    """info/<name>:<arch>.<suffix> (Multi-Arch: same) or info/<name>.<suffix>."""
    for stem in (f"{package.name}:{package.architecture}", package.name):
        candidate = f"{directory}/{stem}.{suffix}"
        if fs.exists(candidate):
            return candidate
    return None


def _list_records(
    text: str,
    canonical: _Canonicalizer,
    package: Package,
    diversions: Mapping[str, tuple[str, str]],
) -> list[FileRecord]:
    """A .list file: one path a line, directories before their contents
    (a path is a directory when the next line is inside it)."""
    listed = [line for line in text.split("\n") if line.startswith("/") and line != "/."]
    records = []
    for index, path in enumerate(listed):
        following = listed[index + 1] if index + 1 < len(listed) else ""
        is_dir = following.startswith(path.rstrip("/") + "/")
        real = path
        diversion = diversions.get(path)
        if diversion is not None and diversion[1] != package.name:
            real = diversion[0]  # diverted by another package (or locally): ours is at `to`
        records.append(FileRecord(path, canonical(real), is_dir))
    return records


def _md5sum_lines(text: str) -> Iterator[tuple[str, str]]:
    """(listed absolute path, md5 hex) from an md5sums file ("md5  path")."""
    for line in text.split("\n"):
        digest, _, path = line.partition("  ")
        if MD5_HEX.match(digest) and path:
            yield "/" + path.lstrip("/"), digest


def conffile_lines(value: str) -> Iterator[tuple[str, str]]:
    """(path, md5) from a Conffiles field value."""
    for line in value.split("\n"):
        words = line.split()
        if len(words) >= 2 and words[0].startswith("/") and MD5_HEX.match(words[1]):
            yield words[0], words[1]


@dataclass(frozen=True)
class PackagedDirs:
    """Where the OS packages are: the directories they list, and those that
    hold a file of theirs."""

    listed: frozenset[str]
    holding_files: frozenset[str]

    def is_os_content(self, directory: str) -> bool:
        """A directory is the distribution's when a package lists it or has a
        file in it, or in its parent (a __pycache__ beside a package's
        modules, made by its maintainer scripts). Anything else (an app's
        docroot, its install dir, pip's site-packages) is the app's own."""
        return (
            directory in self.listed
            or directory in self.holding_files
            or (directory != "/" and parent(directory) in self.holding_files)
        )


class PackageDB:
    """The packages of one image and which canonical paths each owns."""

    def __init__(
        self,
        manager: PackageManager | None,
        packages: Iterable[Package],
        files: Mapping[str, Iterable[FileRecord]],
        warnings: Iterable[str] = (),
        digest_sources: Mapping[str, str] | None = None,
    ) -> None:
        self.manager = manager
        self.packages = tuple(sorted(packages, key=lambda p: p.key))
        self._by_key = {p.key: p for p in self.packages}
        self._files = {key: tuple(records) for key, records in files.items()}
        self.warnings = tuple(warnings)
        # dpkg: where each package's md5sums are (read only for kept packages)
        self._digest_sources = dict(digest_sources or {})
        self._owners: dict[str, list[str]] = {}
        for key in sorted(self._files):
            for record in self._files[key]:
                owners = self._owners.setdefault(record.path, [])
                if key not in owners:
                    owners.append(key)

    def __len__(self) -> int:
        return len(self.packages)

    def layout(self) -> PackagedDirs:
        """Which directories the packages made or put files in."""
        listed, holding = set(), set()
        for records in self._files.values():
            for record in records:
                if record.directory:
                    listed.add(record.path)
                else:
                    holding.add(parent(record.path))
        return PackagedDirs(frozenset(listed), frozenset(holding))

    def package(self, key: str) -> Package:
        return self._by_key[key]

    def files(self, package: Package) -> tuple[FileRecord, ...]:
        return self._files.get(package.key, ())

    def owners(self, path: str, *, directories: bool = True) -> tuple[Package, ...]:
        """The packages that list this canonical path; with directories=False
        only those that list it as a file (or symlink), not as a directory."""
        keys = self._owners.get(path, ())
        if directories:
            return tuple(self._by_key[k] for k in keys)
        return tuple(
            self._by_key[k]
            for k in keys
            if any(r.path == path and not r.directory for r in self._files[k])
        )

    def owner(self, path: str) -> Package | None:
        """The package a kept file belongs to (the first in key order when
        several list it as a file), None for files no package installed."""
        owners = self.owners(path, directories=False)
        return owners[0] if owners else None

    def base_names(self) -> frozenset[str]:
        """The distribution's own base: for dpkg the Essential and
        Priority: required packages and everything they depend on
        (Pre-Depends, Depends, through Provides); libc6 is in it without
        being Essential itself. For apk, the closure of musl and busybox,
        which every Alpine system has. Names, not keys."""
        if self.manager is PackageManager.DPKG:
            roots = {p.name for p in self.packages if p.essential or p.priority == "required"}
            fields = ("Pre-Depends", "Depends")
        elif self.manager is PackageManager.APK:
            roots = {"musl", "busybox"} & {p.name for p in self.packages}
            fields = ("D",)
        else:
            return frozenset()
        providers: dict[str, set[str]] = {}
        for package in self.packages:
            providers.setdefault(package.name, set()).add(package.name)
            provides = package.field("Provides" if package.manager is PackageManager.DPKG else "p")
            for name in _relation_names(provides or "", package.manager):
                providers.setdefault(name, set()).add(package.name)
        by_name: dict[str, list[Package]] = {}
        for package in self.packages:
            by_name.setdefault(package.name, []).append(package)
        base: set[str] = set()
        pending = sorted(roots)
        while pending:
            name = pending.pop()
            if name in base:
                continue
            base.add(name)
            for package in by_name.get(name, ()):
                for field_name in fields:
                    for wanted in _relation_names(package.field(field_name) or "", package.manager):
                        pending.extend(sorted(providers.get(wanted, set()) - base))
        return frozenset(base)

    def kept(self, fs: RootFS, kept_paths: Iterable[str]) -> KeptPackages:
        """The packages with a kept file, each with the records of its kept
        paths (directories too, so ownership of a kept dir is known), their
        digests read now from the image for these packages only."""
        kept_set = set(kept_paths)
        warnings = _Warnings()
        found: dict[str, list[FileRecord]] = {}
        image_dirs: dict[str, bool] = {}
        for package in self.packages:
            records = [
                _as_directory(r) if not r.directory and _is_dir(fs, r.path, image_dirs) else r
                for r in self.files(package)
                if r.path in kept_set
            ]
            if any(not r.directory for r in records):
                found[package.key] = records
        moved = self._move_links_only(fs, found)
        result = []
        for package in self.packages:
            records = found.get(package.key)
            if records is None:
                continue
            if self.manager is PackageManager.DPKG:
                records = self._with_md5sums(fs, package, records, warnings)
            result.append(KeptPackage(package, tuple(records)))
        base = self.base_names()
        return KeptPackages(
            manager=self.manager,
            packages=tuple(result),
            os_release=read_os_release(fs),
            base=tuple(sorted(base & {k.package.name for k in result})),
            warnings=(*self.warnings, *warnings.final()),
            moved_links=tuple(moved),
        )

    def _move_links_only(self, fs: RootFS, found: dict[str, list[FileRecord]]) -> list[MovedLink]:
        """A package of which only symlinks are kept (libssl-dev for its
        libssl.so link, libc-bin for /usr/bin/ld.so) gets no record, or a
        scanner reports the CVEs of its real package twice, under a -dev
        name: each link goes to the package of the file it resolves to (a
        kept one), or to none. Changes `found` in place; returns what moved."""
        moved: list[MovedLink] = []
        for key in list(found):
            files = [r for r in found[key] if not r.directory]
            if not all(_is_symlink(fs, r.path) for r in files):
                continue
            del found[key]
            for record in files:
                try:
                    target = fs.resolve(record.path).path
                except PathError:
                    target = ""
                owner = self.owner(target) if target else None
                if owner is not None and owner.key in found:
                    found[owner.key].append(record)
                    moved.append(MovedLink(key, record.path, target, owner.key))
                else:
                    moved.append(MovedLink(key, record.path, target, None))
        return moved

    def _with_md5sums(
        self, fs: RootFS, package: Package, records: list[FileRecord], warnings: _Warnings
    ) -> list[FileRecord]:
        digests = dict(conffile_lines(package.field("Conffiles") or ""))
        source = self._digest_sources.get(package.key)
        if source is not None:
            data = _read_bounded(fs, source, MAX_LIST_BYTES, warnings)
            if data is not None:
                digests.update(_md5sum_lines(_text(data)))
        return [
            r if r.directory or r.listed not in digests else _replace_digest(r, digests[r.listed])
            for r in records
        ]


def _relation_names(value: str, manager: PackageManager) -> Iterator[str]:
    """Package names in a relation field: dpkg `a (>= 1) | b:any, c`, apk
    `so:libc.musl-x86_64.so.1 musl>=1.2 !conflict`."""
    if manager is PackageManager.DPKG:
        for group in value.split(","):
            for alternative in group.split("|"):
                name = alternative.strip().split(" ", 1)[0].split("(", 1)[0].split(":", 1)[0]
                if name:
                    yield name
        return
    for word in value.split():
        if word.startswith("!"):
            continue
        name = re.split(r"[<>=~]", word, maxsplit=1)[0]
        if name:
            yield name


def _is_dir(fs: RootFS, path: str, cache: dict[str, bool]) -> bool:
    """A kept path that is a directory in the image, or a link to one: a
    .list names an empty directory like a file, and on a merged-/usr image
    the /bin a package lists as its directory is a link to usr/bin."""
    if path not in cache:
        try:
            cache[path] = stat.S_ISDIR(fs.stat(path).st_mode)
        except (PathError, OSError):
            cache[path] = False
    return cache[path]


def _is_symlink(fs: RootFS, path: str) -> bool:
    try:
        return stat.S_ISLNK(fs.lstat(path).st_mode)
    except OSError:
        return False


def _as_directory(record: FileRecord) -> FileRecord:
    return FileRecord(record.listed, record.path, True, record.digest, record.attributes)


def _replace_digest(record: FileRecord, digest: str) -> FileRecord:
    return FileRecord(record.listed, record.path, record.directory, digest, record.attributes)


def _read_dpkg(fs: RootFS, warnings: _Warnings) -> PackageDB:
    canonical = _Canonicalizer(fs)
    diversions = _read_diversions(fs, warnings)
    packages: dict[str, Package] = {}
    files: dict[str, list[FileRecord]] = {}
    digest_sources: dict[str, str] = {}

    def add(package: Package) -> bool:
        if package.key in packages:
            return False
        if len(packages) >= MAX_PACKAGES:
            warnings.add(f"more than {MAX_PACKAGES} packages; the rest are ignored")
            return False
        packages[package.key] = package
        return True

    if fs.exists(DPKG_STATUS):
        data = _read_bounded(fs, DPKG_STATUS, MAX_DATABASE_BYTES, warnings)
        for stanza in parse_deb822(_text(data or b""), DPKG_STATUS, warnings):
            package = _dpkg_package(stanza, DPKG_STATUS, warnings)
            if package is None or not add(package):
                continue
            list_path = _info_file(fs, DPKG_INFO, package, "list")
            if list_path is None:
                warnings.add(f"{package.name}: no file list in {DPKG_INFO}")
                continue
            listing = _read_bounded(fs, list_path, MAX_LIST_BYTES, warnings)
            if listing is not None:
                files[package.key] = _list_records(_text(listing), canonical, package, diversions)
            md5sums = _info_file(fs, DPKG_INFO, package, "md5sums")
            if md5sums is not None:
                digest_sources[package.key] = md5sums
    for path in _status_d_files(fs):
        data = _read_bounded(fs, path, MAX_STANZA_BYTES, warnings)
        for stanza in parse_deb822(_text(data or b""), path, warnings):
            package = _dpkg_package(stanza, path, warnings)
            if package is None or not add(package):
                continue
            # distroless: the md5sums beside the stanza are the file list
            md5sums = _status_d_md5sums(fs, path, package)
            if md5sums is None:
                continue
            listing = _read_bounded(fs, md5sums, MAX_LIST_BYTES, warnings)
            if listing is None:
                continue
            digest_sources[package.key] = md5sums
            files[package.key] = [
                FileRecord(listed, canonical(listed), False, digest)
                for listed, digest in _md5sum_lines(_text(listing))
            ]
    return PackageDB(
        PackageManager.DPKG, packages.values(), files, warnings.final(), digest_sources
    )


def _status_d_files(fs: RootFS) -> list[str]:
    """The stanza files of the distroless layout (not their .md5sums)."""
    try:
        directory = fs.resolve(DPKG_STATUS_D).path
        names = fs.listdir(directory)
    except (PathError, OSError):
        return []
    return [
        f"{DPKG_STATUS_D}/{name}"
        for name in names
        if not name.startswith(".") and not name.endswith(".md5sums")
    ]


def _status_d_md5sums(fs: RootFS, stanza_path: str, package: Package) -> str | None:
    for candidate in (
        f"{stanza_path}.md5sums",
        f"{DPKG_STATUS_D}/{package.name}:{package.architecture}.md5sums",
        f"{DPKG_STATUS_D}/{package.name}.md5sums",
    ):
        if fs.exists(candidate):
            return candidate
    return None


# -- apk -----------------------------------------------------------------------


def _read_apk(fs: RootFS, warnings: _Warnings) -> PackageDB:
    data = _read_bounded(fs, APK_INSTALLED, MAX_DATABASE_BYTES, warnings)
    canonical = _Canonicalizer(fs)
    packages: dict[str, Package] = {}
    files: dict[str, list[FileRecord]] = {}
    for number, block in _apk_blocks(_text(data or b"")):
        parsed = _apk_package(block, canonical, f"{APK_INSTALLED}:{number}", warnings)
        if parsed is None:
            continue
        package, records = parsed
        if package.key in packages:
            warnings.add(f"{APK_INSTALLED}: package {package.name} listed twice; first kept")
            continue
        if len(packages) >= MAX_PACKAGES:
            warnings.add(f"more than {MAX_PACKAGES} packages; the rest are ignored")
            break
        packages[package.key] = package
        files[package.key] = records
    return PackageDB(PackageManager.APK, packages.values(), files, warnings.final())


def _apk_blocks(text: str) -> Iterator[tuple[int, list[tuple[str, str]]]]:
    """(first line number, [(letter, value)...]) per package block."""
    block: list[tuple[str, str]] = []
    start = 1
    for number, line in enumerate(text.split("\n"), start=1):
        if not line:
            if block:
                yield start, block
            block, start = [], number + 1
            continue
        letter, colon, value = line.partition(":")
        block.append((letter if colon else "", value))
    if block:
        yield start, block


def _apk_package(
    block: list[tuple[str, str]], canonical: _Canonicalizer, origin: str, warnings: _Warnings
) -> tuple[Package, list[FileRecord]] | None:
    header: list[tuple[str, str]] = []
    records: list[FileRecord] = []
    directory: str | None = None
    for letter, value in block:
        if len(letter) != 1:
            warnings.add(f"{origin}: a package block with a line that is not a record; skipped")
            return None
        if letter == "F":
            directory = "/" + value.strip("/") if value.strip("/") else "/"
            records.append(FileRecord(directory, canonical(directory), True))
        elif letter == "R":
            if directory is None or not value or "/" in value:
                warnings.add(f"{origin}: an R: record outside an F: directory; skipped")
                return None
            listed = join(directory, value)
            records.append(FileRecord(listed, canonical(listed), False))
        elif records and letter in (
            APK_DIR_ATTRIBUTES if records[-1].directory else APK_FILE_ATTRIBUTES
        ):
            records[-1] = _with_attribute(records[-1], letter, value)
        elif directory is None:
            header.append((letter, value))
        # any other letter after the file records is ignored, as apk does
    values = dict(header)
    name, version = values.get("P", ""), values.get("V", "")
    if not APK_NAME.match(name) or not version or any(c.isspace() for c in version):
        warnings.add(f"{origin}: a package block with name {name!r} version {version!r} skipped")
        return None
    package = Package(
        manager=PackageManager.APK,
        name=name,
        version=version,
        architecture=values.get("A", ""),
        source=values.get("o", "") or name,
        source_version=version,
        fields=tuple(header),
    )
    return package, records


def _with_attribute(record: FileRecord, letter: str, value: str) -> FileRecord:
    digest = value if letter == "Z" else record.digest
    return FileRecord(
        record.listed, record.path, record.directory, digest, (*record.attributes, (letter, value))
    )


# -- reading -------------------------------------------------------------------


def read_package_db(fs: RootFS) -> PackageDB:
    """The image's package database: dpkg, else apk, else an empty one
    (with a warning when an rpm database is there but not read)."""
    warnings = _Warnings()
    if fs.exists(DPKG_STATUS) or fs.exists(DPKG_STATUS_D):
        db = _read_dpkg(fs, warnings)
    elif fs.exists(APK_INSTALLED):
        db = _read_apk(fs, warnings)
    else:
        rpm = next((p for p in RPM_DATABASES if fs.exists(p)), None)
        if rpm is not None:
            warnings.add(f"{rpm}: rpm package databases are not read; no package records")
        db = PackageDB(None, (), {}, warnings.final())
    for warning in db.warnings:
        log.debug("package database: %s", warning)
    return db


def parse_os_release(text: str) -> OsRelease:
    """KEY=value lines, values optionally quoted (os-release(5))."""
    values: dict[str, str] = {}
    for line in text.split("\n"):
        key, equals, value = line.strip().partition("=")
        if not equals or not key.isidentifier():
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
            value = re.sub(r"\\([\\$\"'`])", r"\1", value)
        values[key] = value
    return OsRelease(
        id=values.get("ID", ""),
        version_id=values.get("VERSION_ID", ""),
        version_codename=values.get("VERSION_CODENAME", ""),
        id_like=tuple(values.get("ID_LIKE", "").split()),
        pretty_name=values.get("PRETTY_NAME", ""),
    )


def read_os_release(fs: RootFS) -> OsRelease:
    for path in OS_RELEASE_PATHS:
        try:
            data = fs.read_bytes(path, limit=MAX_OS_RELEASE_BYTES)
        except PathError:
            continue
        return parse_os_release(_text(data))
    return OsRelease()


# -- what the micro image keeps --------------------------------------------------


@dataclass(frozen=True)
class KeptPackage:
    package: Package
    files: tuple[FileRecord, ...]  # the package's records of kept paths

    @property
    def kept_files(self) -> tuple[FileRecord, ...]:
        return tuple(r for r in self.files if not r.directory)


@dataclass(frozen=True)
class MovedLink:
    """A kept symlink of a package that has nothing else kept: recorded
    under the package of the file it resolves to (`owner`, a package key),
    or under none (a file no package installed, or a dangling link)."""

    package: str  # the key of the package that lists the link
    path: str
    target: str  # the canonical path it resolves to, "" when it does not
    owner: str | None


@dataclass(frozen=True)
class KeptPackages:
    """What the collecting sensor hands back: the packages with a kept file,
    their records of kept paths, the release, warnings. JSON both ways."""

    manager: PackageManager | None
    packages: tuple[KeptPackage, ...]
    os_release: OsRelease = field(default_factory=OsRelease)
    base: tuple[str, ...] = ()  # names of kept packages in the distribution's base
    warnings: tuple[str, ...] = ()
    moved_links: tuple[MovedLink, ...] = ()  # links of packages with only links kept

    def owner_map(self) -> dict[str, Package]:
        """Canonical path -> owning package, files before directories."""
        owners: dict[str, Package] = {}
        for kept in self.packages:
            for record in kept.files:
                if not record.directory:
                    owners.setdefault(record.path, kept.package)
        for kept in self.packages:
            for record in kept.files:
                owners.setdefault(record.path, kept.package)
        return owners

    def dependency_ranks(self) -> dict[str, int]:
        """For each kept package's name, how many kept packages it needs,
        itself included (Pre-Depends/Depends for dpkg, D: for apk, followed
        transitively): libc6 2 (with libgcc-s1), libssl3 3, python3.11 more.
        Layers are ordered by it, the foundation first."""
        kept_names = {k.package.name for k in self.packages}
        needs: dict[str, set[str]] = {}
        for item in self.packages:
            package = item.package
            fields = (
                ("Pre-Depends", "Depends") if package.manager is PackageManager.DPKG else ("D",)
            )
            names = needs.setdefault(package.name, set())
            for field_name in fields:
                names.update(_relation_names(package.field(field_name) or "", package.manager))
        ranks = {}
        for name in kept_names:
            seen = {name}
            pending = [name]
            while pending:
                for wanted in needs.get(pending.pop(), ()):
                    if wanted in kept_names and wanted not in seen:
                        seen.add(wanted)
                        pending.append(wanted)
            ranks[name] = len(seen)
        return ranks

    def to_json(self) -> Any:
        """Plain JSON data (slimmer.wire), as the sensor hands it back."""
        return wire.encode(self)

    @classmethod
    def from_json(cls, data: Any) -> KeptPackages:
        """Validated through slimmer.wire: what comes out of a container is
        untrusted."""
        return wire.decode(cls, data)
