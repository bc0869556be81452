"""The build context: a deterministic rootfs tar, its validation when it
comes back from the container, and the context tar (the Dockerfile is
slimmer.dockerfile's).

The context holds `Dockerfile` (first, with a plain ustar header, so that
`docker build - < context.tar` works) and `rootfs.tar`, which the Dockerfile
ADDs: ADD of a local tar keeps owners, modes, setuid bits, hard links and
mtimes, where COPY would make every file root's.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from dataclasses import dataclass
from typing import BinaryIO

from slimmer.errors import SlimError
from slimmer.fileset import Entry, Selection
from slimmer.rootfs import Kind, RootFS

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


def write_rootfs_tar(fs: RootFS, selection: Selection, out: BinaryIO) -> None:
    """Write the selected entries, in order, streaming file contents. A file
    whose inode was written before becomes a hard link to it."""
    seen_inodes: dict[tuple[int, int], str] = {}
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
    "write_context",
    "write_rootfs_tar",
]
