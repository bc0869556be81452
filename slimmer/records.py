"""The package records a micro image carries, so scanners see what is in
it, and where they may go.

For every package with a kept file, the form distroless images use and
scanners read (Trivy, syft/Grype): `/var/lib/dpkg/status.d/<pkg>` holding
the package's own stanza (its Conffiles trimmed to the kept ones) and
`<pkg>.md5sums` listing the kept files; for Alpine, `/lib/apk/db/installed`
with the kept packages and only their kept files' F:/R: records.

The records hold the database's bytes: a field that is not UTF-8 (a
Latin-1 Maintainer of an old or third-party package, an apk T: line) is
written back as the bytes it was (the values are str with surrogateescape).

Where they go is slim's, never the image's (`check_placement`): a record is
a new regular file at its own path, reached through real directories only.
When the micro image would have anything at a record's path, or something
that is not a directory on the way to it (a kept symlink `status.d ->
/usr/bin`, a file, a directory named like a package's record), the build
is refused with the path named: slim writes neither through an image's
link nor over an image's file. A record's name is never one a scanner
reads as something else: a stanza file never ends in `.md5sums` (a package
named `foo.md5sums` has its record at `foo.md5sums:<arch>`, as a package
installed for several architectures has), and no two records share a path.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from slimmer.errors import SlimError
from slimmer.fileset import Entry
from slimmer.packages import (
    APK_INSTALLED,
    DPKG_ARCH,
    DPKG_NAME,
    DPKG_STATUS_D,
    FIELD_NAME,
    KeptPackage,
    KeptPackages,
    PackageManager,
    conffile_lines,
)
from slimmer.rootfs import Kind, basename, parent, parents, printable

log = logging.getLogger(__name__)

MD5SUMS_SUFFIX = ".md5sums"
TEXT_ERRORS = "surrogateescape"  # the database's bytes, as read


@dataclass(frozen=True)
class GeneratedFile:
    """A file slim writes into the micro image (root-owned)."""

    path: str
    data: bytes
    mode: int = 0o644
    package: str | None = None  # key of the package it describes (None: several)
    mtime: int = 0


class RecordError(ValueError):
    """A kept package record that must not become a file (bad name)."""


class PlacementError(SlimError):
    """The micro image has something where a package record goes."""


def _deb822(fields: Iterable[tuple[str, str]]) -> str:
    """Fields as a stanza. The values come back from the container: a name
    that is not a field name is dropped, and a blank continuation line
    (which would end the stanza) is written as " .", deb822's empty line."""
    lines = []
    for name, value in fields:
        if not FIELD_NAME.match(name):
            continue
        first, *rest = value.split("\n")
        lines.append(f"{name}: {first}".rstrip(" ") if first else f"{name}:")
        for line in rest:
            if not line.strip():
                lines.append(" .")
            else:
                lines.append(line if line[:1] in (" ", "\t") else f" {line}")
    return "\n".join(lines) + "\n"


def dpkg_stanza(kept: KeptPackage) -> str:
    """The package's stanza, Conffiles trimmed to the kept ones (a scanner
    reads them as the package's files)."""
    kept_listed = {r.listed for r in kept.files}
    fields = []
    for name, value in kept.package.fields:
        if name.lower() == "conffiles":
            lines = [
                line
                for line in value.split("\n")
                if line.split() and line.split()[0] in kept_listed
            ]
            if not lines:
                continue
            value = "\n".join(["", *lines])
        fields.append((name, value))
    return _deb822(fields)


def dpkg_md5sums(kept: KeptPackage) -> str:
    """The md5sums of the kept files the package has digests for, as dpkg
    writes them: `md5  relative/path`, in the package's order."""
    conffiles = {path for path, _ in conffile_lines(kept.package.field("Conffiles") or "")}
    return "".join(
        f"{r.digest}  {r.listed.lstrip('/')}\n"
        for r in kept.kept_files
        if r.digest and r.listed not in conffiles and "\n" not in r.listed
    )


def dpkg_record_name(kept: KeptPackage, ambiguous: frozenset[str]) -> str:
    """The name of a package's stanza file under status.d: the package's
    name, or name:arch when the name is kept for several architectures or
    ends in `.md5sums` (scanners read such a file as a package's digests)."""
    package = kept.package
    if not DPKG_NAME.match(package.name) or not DPKG_ARCH.match(package.architecture):
        raise RecordError(f"package {package.name!r}:{package.architecture!r} has a bad name")
    if package.name in ambiguous or package.name.endswith(MD5SUMS_SUFFIX):
        return f"{package.name}:{package.architecture}"
    return package.name


def dpkg_records(kept: KeptPackages) -> tuple[GeneratedFile, ...]:
    """status.d/<pkg> and status.d/<pkg>.md5sums for each kept package, as
    distroless writes them. A package whose name is not a dpkg name is left
    out (it cannot come from a real database)."""
    names = [k.package.name for k in kept.packages]
    ambiguous = frozenset(n for n in names if names.count(n) > 1)
    files: list[GeneratedFile] = []
    for item in kept.packages:
        try:
            stem = dpkg_record_name(item, ambiguous)
        except RecordError as exc:
            log.warning("%s; no record written for it", exc)
            continue
        key = item.package.key
        stanza = dpkg_stanza(item).encode("utf-8", TEXT_ERRORS)
        files.append(GeneratedFile(f"{DPKG_STATUS_D}/{stem}", stanza, package=key))
        md5sums = dpkg_md5sums(item)
        if md5sums:
            path = f"{DPKG_STATUS_D}/{stem}{MD5SUMS_SUFFIX}"
            files.append(GeneratedFile(path, md5sums.encode("utf-8", TEXT_ERRORS), package=key))
    return _unique(files)


def _unique(files: Iterable[GeneratedFile]) -> tuple[GeneratedFile, ...]:
    """The records sorted by path; two for one path (which the names above
    cannot give) are both left out, with a warning, rather than one lost."""
    by_path: dict[str, list[GeneratedFile]] = {}
    for item in files:
        by_path.setdefault(item.path, []).append(item)
    for path, same in by_path.items():
        if len(same) > 1:
            log.warning("%d package records for %s; none written", len(same), path)
    return tuple(same[0] for path, same in sorted(by_path.items()) if len(same) == 1)


def apk_installed(kept: KeptPackages) -> str:
    """apk's installed database with the kept packages only, each with the
    F:/R: records of its kept files (and the directories holding them)."""
    blocks = []
    for item in kept.packages:
        lines = [
            f"{letter}:{value}"
            for letter, value in item.package.fields
            if len(letter) == 1 and "\n" not in value
        ]
        wanted_dirs = {parent(r.listed) for r in item.kept_files}
        for record in item.files:
            if not _one_line(record.listed, *(f"{k}{v}" for k, v in record.attributes)):
                continue  # cannot come from a real database: a record per line
            if record.directory:
                if record.listed in wanted_dirs:
                    lines.append(f"F:{record.listed.lstrip('/')}")
                    lines.extend(f"{k}:{v}" for k, v in record.attributes)
            else:
                if parent(record.listed) not in wanted_dirs:
                    continue
                lines.append(f"R:{basename(record.listed)}")
                lines.extend(f"{k}:{v}" for k, v in record.attributes)
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks) + ("\n" if blocks else "")


def _one_line(*values: str) -> bool:
    return not any("\n" in value for value in values)


def apk_records(kept: KeptPackages) -> tuple[GeneratedFile, ...]:
    if not kept.packages:
        return ()
    return (GeneratedFile(APK_INSTALLED, apk_installed(kept).encode("utf-8", TEXT_ERRORS)),)


def package_records(kept: KeptPackages) -> tuple[GeneratedFile, ...]:
    """The package database files of the micro image, for its manager."""
    if kept.manager is PackageManager.DPKG:
        return dpkg_records(kept)
    if kept.manager is PackageManager.APK:
        return apk_records(kept)
    return ()


def dated_records(kept: KeptPackages, mtimes: Mapping[str, int]) -> tuple[GeneratedFile, ...]:
    """package_records(kept), each as old as the newest kept file of the
    package it describes (of every kept package, for a database file that
    describes several): the same kept files give the same records, and no
    clock enters the image. `mtimes`: the kept files' mtimes by path."""
    newest: dict[str, int] = {}
    for item in kept.packages:
        times = [mtimes[r.path] for r in item.kept_files if r.path in mtimes]
        newest[item.package.key] = max(times, default=0)
    overall = max(newest.values(), default=0)
    return tuple(
        replace(record, mtime=newest.get(record.package, 0) if record.package else overall)
        for record in package_records(kept)
    )


def check_placement(
    records: Sequence[GeneratedFile], entries: Sequence[Entry], base_dirs: Iterable[str] = ()
) -> None:
    """Refuse records the micro image has no free place for: anything among
    the kept `entries` (or a directory of the base image) at a record's
    path, or a kept entry that is not a directory on the way to it. A record
    is never written through an image's link or over an image's file."""
    kept = {entry.path: entry for entry in entries}
    base = frozenset(base_dirs)
    for record in records:
        problem = _placement_problem(record.path, kept, base)
        if problem is not None:
            raise PlacementError(
                f"the package records cannot be written: {problem}",
                "build with --no-package-records, or leave that path out with --exclude",
            )


def _placement_problem(path: str, kept: Mapping[str, Entry], base: frozenset[str]) -> str | None:
    for directory in reversed(list(parents(path))):
        entry = kept.get(directory)
        if entry is not None and entry.kind is not Kind.DIR:
            return (
                f"{printable(directory)} is a {entry.kind.value} in the image, on the way to "
                f"{printable(path)} (kept: {', '.join(entry.reasons)})"
            )
    entry = kept.get(path)
    if entry is not None:
        return (
            f"the image has a {entry.kind.value} at {printable(path)}, where the record goes "
            f"(kept: {', '.join(entry.reasons)})"
        )
    if path in base:
        return f"the base image has a directory at {printable(path)}, where the record goes"
    return None
