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
import re
import stat
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from slimmer.errors import SlimError
from slimmer.fileset import Entry, Selection, Xattr
from slimmer.rootfs import Kind, RootFS
from slimmer.sparse import (
    SPARSE_MIN_HOLES,
    ZEROS,
    PaxMember,
    SparseContent,
    SparseMapError,
    checked_map,
    data_map,
    sparse_member,
)
from slimmer.strip import StripPlan, stripped_content

TAR_FORMAT = tarfile.GNU_FORMAT  # long names, raw bytes in names, no PAX times
TAR_ENCODING = "utf-8"
TAR_ERRORS = "surrogateescape"
ROOTFS_MEMBER = "rootfs.tar"


class ContextError(SlimError):
    """The archive from the container is not what was asked for."""


XATTR_HEADER = "SCHILY.xattr."  # how tar (and ADD) carry an extended attribute


def xattr_headers(xattrs: tuple[Xattr, ...]) -> dict[str, str]:
    """PAX records for extended attributes; binary values go as raw bytes
    (tarfile writes them with hdrcharset=BINARY)."""
    return {XATTR_HEADER + x.name: x.data.decode(TAR_ENCODING, TAR_ERRORS) for x in xattrs}


def tar_member(entry: Entry) -> tarfile.TarInfo:
    """An entry's member as slim writes it: numeric owners, integer mtime,
    its extended attributes as PAX records (no data is attached)."""
    member: tarfile.TarInfo = (
        PaxMember(entry.path.lstrip("/"))
        if entry.xattrs
        else tarfile.TarInfo(entry.path.lstrip("/"))
    )
    member.pax_headers = xattr_headers(entry.xattrs)
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
    stripped: StripPlan | None = None,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Write the selected entries, in order, streaming file contents. A file
    whose inode was written before becomes a hard link to it; a file with
    enough zeros becomes a sparse member (slimmer.sparse). A file of the
    `stripped` plan is written stripped (the selection carries its new size).
    `progress` hears the bytes of file contents written so far, after each file."""
    seen_inodes: dict[tuple[int, int], str] = {}
    results = stripped.results if stripped is not None else {}
    written = 0
    with open_tar_writer(out) as tar:
        for entry in selection.entries:
            if entry.path == "/":
                continue
            member = tar_member(entry)
            if entry.kind is not Kind.FILE:
                tar.addfile(member)
                continue
            info = fs.lstat(entry.path)
            inode = (info.st_dev, info.st_ino)
            if info.st_nlink > 1 and inode in seen_inodes:
                member.type = tarfile.LNKTYPE
                member.linkname = seen_inodes[inode]
                member.size = 0
                member.pax_headers = {}  # the attributes are the inode's: on its first name
                tar.addfile(member)
                continue
            seen_inodes[inode] = member.name
            _, fd = fs.open_file(entry.path)
            with os.fdopen(fd, "rb") as handle:
                result = results.get(entry.path)
                if result is not None:
                    try:
                        data = stripped_content(result, handle)
                    except ValueError as exc:
                        raise ContextError(f"{entry.path}: {exc}") from None
                    if len(data) != entry.size:
                        raise ContextError(f"{entry.path}: stripped size is not the planned one")
                    tar.addfile(member, io.BytesIO(data))
                else:
                    if os.fstat(handle.fileno()).st_size != entry.size:
                        raise ContextError(f"{entry.path} changed size while it was collected")
                    add_file(tar, member, handle)
            written += entry.size
            if progress is not None:
                progress(written)


def add_file(tar: tarfile.TarFile, member: tarfile.TarInfo, handle: BinaryIO) -> None:
    """A regular file's member: sparse when its zeros are worth it."""
    fd = handle.fileno()
    layout = data_map(fd, member.size) if member.size >= SPARSE_MIN_HOLES else None
    if layout is None or not layout.sparse:
        handle.seek(0)  # SEEK_DATA and SEEK_HOLE moved the offset
        tar.addfile(member, handle)
        return

    def read_at(offset: int, length: int) -> bytes:
        return os.pread(fd, length, offset)

    tar.addfile(sparse_member(member, layout), SparseContent(layout, read_at))


@dataclass(frozen=True)
class RootfsStats:
    members: int
    file_bytes: int


@dataclass(frozen=True)
class FileDigests:
    """A collected file's digests, for the SBOM: sha256, and sha1, which
    SPDX requires of every file."""

    sha256: str
    sha1: str


class _Hashes:
    def __init__(self) -> None:
        self.sha256 = hashlib.sha256()
        self.sha1 = hashlib.sha1(usedforsecurity=False)

    def update(self, data: bytes) -> None:
        self.sha256.update(data)
        self.sha1.update(data)

    def digests(self) -> FileDigests:
        return FileDigests(self.sha256.hexdigest(), self.sha1.hexdigest())


class _HashingReader(io.RawIOBase):
    """Reads through to a file, hashing what passes."""

    def __init__(self, inner: BinaryIO) -> None:
        self.inner = inner
        self.hashes = _Hashes()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        data = self.inner.read(size)
        self.hashes.update(data)
        return data


def check_member(member: tarfile.TarInfo, entry: Entry | None, written: set[str]) -> None:
    """Refuse a member that is not the selected entry of that name."""
    name = member.name
    if name.startswith("/") or ".." in name.split("/") or entry is None or name in written:
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
    found = {k: v for k, v in member.pax_headers.items() if k.startswith(XATTR_HEADER)}
    if found and (member.islnk() or found != xattr_headers(entry.xattrs)):
        raise ContextError(f"{name!r}: extended attributes that were not selected")


def clean_member(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """The member as slim writes it: numeric owners, integer mtime, plain
    types, only the extended attributes (checked against the selection)."""
    xattrs = {k: v for k, v in member.pax_headers.items() if k.startswith(XATTR_HEADER)}
    clean = PaxMember(member.name) if xattrs else tarfile.TarInfo(member.name)
    clean.pax_headers = xattrs
    clean.type = tarfile.REGTYPE if member.isreg() else member.type
    clean.mode = stat.S_IMODE(member.mode)
    clean.uid, clean.gid, clean.mtime = member.uid, member.gid, int(member.mtime)
    clean.uname = clean.gname = ""
    clean.linkname, clean.size = member.linkname, member.size if member.isreg() else 0
    return clean


def copy_sparse(
    tar: tarfile.TarFile, member: tarfile.TarInfo, clean: tarfile.TarInfo, out: tarfile.TarFile
) -> FileDigests:
    """A sparse member, copied as one: the map checked, only its data read.
    Returns the digests of the whole file, zeros included."""
    layout = checked_map(list(member.sparse or ()), member.size)
    extracted = tar.extractfile(member)
    if extracted is None:
        raise ContextError(f"{member.name!r} has no data")
    content = extracted.raw  # no read-ahead: the stream cannot seek back
    digest = _Hashes()
    hashed = 0

    def hash_zeros(until: int) -> None:
        nonlocal hashed
        while hashed < until:
            step = min(len(ZEROS), until - hashed)
            digest.update(ZEROS[:step] if step < len(ZEROS) else ZEROS)
            hashed += step

    def read_at(offset: int, length: int) -> bytes:
        nonlocal hashed
        hash_zeros(offset)
        content.seek(offset)
        data = bytes(content.read(length))
        digest.update(data)
        hashed += len(data)
        return data

    out.addfile(sparse_member(clean, layout), SparseContent(layout, read_at))
    hash_zeros(layout.size)
    return digest.digests()


def copy_validated(
    source: BinaryIO,
    selection: Selection,
    out: BinaryIO,
    digests: dict[str, FileDigests] | None = None,
) -> RootfsStats:
    """Re-write the rootfs tar that came back from the container, checking
    every member first: only requested paths, relative names without `..`,
    the kind and size that were selected, symlinks as selected, hard links
    only to members already written, no devices or FIFOs, sparse maps
    inside their file. Nothing is extracted on the host. With `digests`,
    the digests of every regular file (hard links: their file's) are filled
    in by image path, as the bytes pass (for the SBOM)."""
    expected = {e.path.lstrip("/"): e for e in selection.entries if e.path != "/"}
    written: set[str] = set()
    file_bytes = 0
    found: dict[str, FileDigests] = {}
    try:
        with (
            tarfile.open(
                fileobj=source, mode="r|", encoding=TAR_ENCODING, errors=TAR_ERRORS
            ) as tar,
            open_tar_writer(out) as writer,
        ):
            for member in tar:
                name = member.name
                check_member(member, expected.get(name), written)
                clean = clean_member(member)
                if member.isreg() and member.sparse is not None:
                    found["/" + name] = copy_sparse(tar, member, clean, writer)
                elif member.isreg():
                    reader = _HashingReader(tar.extractfile(member))  # type: ignore[arg-type]
                    writer.addfile(clean, reader)
                    found["/" + name] = reader.hashes.digests()
                else:
                    writer.addfile(clean)
                    if member.islnk():
                        found["/" + name] = found["/" + member.linkname]
                file_bytes += clean.size
                written.add(name)
    except (tarfile.TarError, SparseMapError, ValueError) as exc:
        raise ContextError(f"the archive from the container is not a valid tar: {exc}") from None
    if digests is not None:
        digests.update(found)
    missing = set(expected) - written
    if missing:
        raise ContextError(
            f"{len(missing)} selected entries are missing, e.g. {sorted(missing)[0]!r}"
        )
    return RootfsStats(len(written), file_bytes)


@dataclass(frozen=True)
class ContextMember:
    """A tar the Dockerfile ADDs: its name in the context (slim's choice,
    never the image's) and where its bytes are."""

    name: str
    source: BinaryIO
    size: int


CONTEXT_MEMBER_NAME = re.compile(r"(rootfs|layer[0-9]{3})\.tar")


def write_context(dockerfile: str, members: Sequence[ContextMember], out: BinaryIO) -> None:
    """The context tar: Dockerfile first (plain ustar header, integer mtime),
    then the tars it ADDs, in order. Same inputs, same bytes."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
        data = dockerfile.encode()
        member = tarfile.TarInfo("Dockerfile")
        member.size, member.mode, member.mtime = len(data), 0o644, 0
        member.uname = member.gname = ""
        tar.addfile(member, io.BytesIO(data))
        for item in members:
            if not CONTEXT_MEMBER_NAME.fullmatch(item.name):
                raise ValueError(f"{item.name!r} is not a name slim gives a context member")
            member = tarfile.TarInfo(item.name)
            member.size, member.mode, member.mtime = item.size, 0o644, 0
            member.uname = member.gname = ""
            tar.addfile(member, item.source)


__all__ = [
    "ContextError",
    "ContextMember",
    "RootfsStats",
    "copy_validated",
    "write_context",
    "write_rootfs_tar",
]
