"""The build context: a deterministic rootfs tar, its validation when it
comes back from the container, the Dockerfile, and the context tar.

The context holds `Dockerfile` (first, with a plain ustar header, so that
`docker build - < context.tar` works) and `rootfs.tar`, which the Dockerfile
ADDs: ADD of a local tar keeps owners, modes, setuid bits, hard links and
mtimes, where COPY would make every file root's.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from slimmer.errors import SlimError
from slimmer.fileset import Entry, Selection
from slimmer.rootfs import Kind, RootFS
from slimmer.trace import Healthcheck, ImageConfig

TAR_FORMAT = tarfile.GNU_FORMAT  # long names, raw bytes in names, no PAX times
TAR_ENCODING = "utf-8"
TAR_ERRORS = "surrogateescape"
ROOTFS_MEMBER = "rootfs.tar"


class ContextError(SlimError):
    """The archive from the container is not what was asked for."""


def _member(entry: Entry) -> tarfile.TarInfo:
    member = tarfile.TarInfo(entry.path.lstrip("/"))
    member.mode = entry.mode
    member.uid, member.gid = entry.uid, entry.gid
    member.uname = member.gname = ""
    member.mtime = entry.mtime
    if entry.kind is Kind.DIR:
        member.type = tarfile.DIRTYPE
    elif entry.kind is Kind.SYMLINK:
        member.type = tarfile.SYMTYPE
        member.linkname = entry.link or ""
    else:
        member.type = tarfile.REGTYPE
        member.size = entry.size
    return member


def open_tar_writer(out: BinaryIO) -> tarfile.TarFile:
    return tarfile.open(
        fileobj=out, mode="w|", format=TAR_FORMAT, encoding=TAR_ENCODING, errors=TAR_ERRORS
    )


def write_rootfs_tar(
    fs: RootFS,
    selection: Selection,
    out: BinaryIO,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Write the selected entries, in order, streaming file contents. A file
    whose inode was written before becomes a hard link to it. `progress`
    hears the bytes of file contents written so far, after each file."""
    seen_inodes: dict[tuple[int, int], str] = {}
    written = 0
    with open_tar_writer(out) as tar:
        for entry in selection.entries:
            if entry.path == "/":
                continue
            member = _member(entry)
            if entry.kind is not Kind.FILE:
                tar.addfile(member)
                continue
            info = fs.lstat(entry.path)
            inode = (info.st_dev, info.st_ino)
            if info.st_nlink > 1 and inode in seen_inodes:
                member.type = tarfile.LNKTYPE
                member.linkname = seen_inodes[inode]
                member.size = 0
                tar.addfile(member)
                continue
            seen_inodes[inode] = member.name
            _, fd = fs.open_file(entry.path)
            with os.fdopen(fd, "rb") as handle:
                if os.fstat(handle.fileno()).st_size != entry.size:
                    raise ContextError(f"{entry.path} changed size while it was collected")
                tar.addfile(member, handle)
            written += entry.size
            if progress is not None:
                progress(written)


@dataclass(frozen=True)
class RootfsStats:
    members: int
    file_bytes: int


class _HashingReader(io.RawIOBase):
    """Reads through to a file, hashing what passes (sha256)."""

    def __init__(self, inner: BinaryIO) -> None:
        self.inner = inner
        self.sha256 = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        data = self.inner.read(size)
        self.sha256.update(data)
        return data


def copy_validated(
    source: BinaryIO,
    selection: Selection,
    out: BinaryIO,
    digests: dict[str, str] | None = None,
) -> RootfsStats:
    """Re-write the rootfs tar that came back from the container, checking
    every member first: only requested paths, relative names without `..`,
    the kind and size that were selected, symlinks as selected, hard links
    only to members already written, no devices or FIFOs. Nothing is
    extracted on the host. With `digests`, the sha256 of every regular file
    (hard links: their file's) is filled in by image path, as the bytes pass
    (for the SBOM)."""
    expected = {e.path.lstrip("/"): e for e in selection.entries if e.path != "/"}
    written: set[str] = set()
    file_bytes = 0
    with (
        tarfile.open(fileobj=source, mode="r|", encoding=TAR_ENCODING, errors=TAR_ERRORS) as tar,
        open_tar_writer(out) as writer,
    ):
        for member in tar:
            name = member.name
            entry = expected.get(name)
            parts = name.split("/")
            if name.startswith("/") or ".." in parts or entry is None or name in written:
                raise ContextError(f"unexpected member {name!r} in the archive from the container")
            if member.islnk():
                if member.linkname not in written or entry.kind is not Kind.FILE:
                    raise ContextError(f"hard link {name!r} -> {member.linkname!r} points outside")
            elif member.issym():
                if entry.kind is not Kind.SYMLINK or member.linkname != entry.link:
                    raise ContextError(f"symlink {name!r} is not the one selected")
            elif member.isdir():
                if entry.kind is not Kind.DIR:
                    raise ContextError(f"{name!r} is a directory, expected {entry.kind.value}")
            elif member.isreg():
                if entry.kind is not Kind.FILE or member.size != entry.size:
                    raise ContextError(f"{name!r} is not the file that was selected")
            else:
                raise ContextError(f"{name!r}: device, FIFO or unknown member type refused")
            clean = tarfile.TarInfo(name)
            clean.type, clean.mode = member.type, stat.S_IMODE(member.mode)
            clean.uid, clean.gid, clean.mtime = member.uid, member.gid, int(member.mtime)
            clean.uname = clean.gname = ""
            clean.linkname, clean.size = member.linkname, member.size if member.isreg() else 0
            if member.isreg():
                reader = _HashingReader(tar.extractfile(member))  # type: ignore[arg-type]
                writer.addfile(clean, reader)
                file_bytes += member.size
                if digests is not None:
                    digests["/" + name] = reader.sha256.hexdigest()
            else:
                writer.addfile(clean)
                if digests is not None and member.islnk():
                    digests["/" + name] = digests.get("/" + member.linkname, "")
            written.add(name)
    missing = set(expected) - written
    if missing:
        raise ContextError(
            f"{len(missing)} selected entries are missing, e.g. {sorted(missing)[0]!r}"
        )
    return RootfsStats(len(written), file_bytes)


# -- the Dockerfile ------------------------------------------------------------


def _quote(value: str) -> str:
    """A double-quoted Dockerfile word: backslash, quote and $ escaped."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


def _exec_form(argv: Sequence[str]) -> str:
    return json.dumps(list(argv))


def _duration(nanoseconds: int | None) -> str | None:
    if not nanoseconds:
        return None
    return f"{nanoseconds // 1_000_000}ms"


def render_healthcheck(check: Healthcheck) -> str | None:
    test = list(check.test)
    if not test:
        return None
    if test[0] == "NONE":
        return "HEALTHCHECK NONE"
    flags = []
    for flag, nanoseconds in (
        ("interval", check.interval),
        ("timeout", check.timeout),
        ("start-period", check.start_period),
    ):
        value = _duration(nanoseconds)
        if value:
            flags.append(f"--{flag}={value}")
    if check.retries:
        flags.append(f"--retries={check.retries}")
    command = " ".join(test[1:]) if test[0] == "CMD-SHELL" else _exec_form(test[1:])
    return " ".join(["HEALTHCHECK", *flags, "CMD", command])


def render_dockerfile(
    config: ImageConfig, base: str, labels: Mapping[str, str]
) -> tuple[str, list[str]]:
    """The micro image's Dockerfile: the fat image's contract on top of one
    ADD of the rootfs. Returns the text and warnings for what could not be
    expressed."""
    warnings: list[str] = []
    lines = [f"FROM {base}", f"ADD {ROOTFS_MEMBER} /"]
    for item in config.env:
        name, _, value = item.partition("=")
        if "\n" in value or not name:
            warnings.append(f"ENV {name} has a newline in its value and was left out")
            continue
        lines.append(f"ENV {name}={_quote(value)}")
    all_labels = {**config.labels, **labels}
    for name in sorted(all_labels):
        lines.append(f"LABEL {_quote(name)}={_quote(all_labels[name])}")
    if config.workdir:
        lines.append(f"WORKDIR {config.workdir.replace('$', chr(92) + '$')}")
    for port in config.exposed_ports:
        lines.append(f"EXPOSE {port}")
    if config.volumes:
        lines.append(f"VOLUME {_exec_form(config.volumes)}")
    if config.stop_signal:
        lines.append(f"STOPSIGNAL {config.stop_signal}")
    if config.shell:
        lines.append(f"SHELL {_exec_form(config.shell)}")
    if config.healthcheck:
        rendered = render_healthcheck(config.healthcheck)
        if rendered:
            lines.append(rendered)
    if config.user:
        lines.append(f"USER {config.user.replace('$', chr(92) + '$')}")
    if config.entrypoint is not None:
        lines.append(f"ENTRYPOINT {_exec_form(config.entrypoint)}")
    if config.cmd is not None:
        lines.append(f"CMD {_exec_form(config.cmd)}")
    return "\n".join(lines) + "\n", warnings


def write_context(dockerfile: str, rootfs: BinaryIO, rootfs_size: int, out: BinaryIO) -> None:
    """The context tar: Dockerfile first (plain ustar header, integer mtime),
    then rootfs.tar. Same inputs, same bytes."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
        data = dockerfile.encode()
        member = tarfile.TarInfo("Dockerfile")
        member.size, member.mode, member.mtime = len(data), 0o644, 0
        member.uname = member.gname = ""
        tar.addfile(member, io.BytesIO(data))
        member = tarfile.TarInfo(ROOTFS_MEMBER)
        member.size, member.mode, member.mtime = rootfs_size, 0o644, 0
        member.uname = member.gname = ""
        tar.addfile(member, rootfs)


__all__ = [
    "ContextError",
    "RootfsStats",
    "copy_validated",
    "render_dockerfile",
    "write_context",
    "write_rootfs_tar",
]
