"""Path resolution confined to an image root.

Every path of an image is resolved here, component by component, the way the
kernel would resolve it if the root were `/`: an absolute symlink target
restarts at the root, `..` at the root stays at the root, relative targets
resolve from the link's directory and `..` is physical (it undoes the
directory the walk really is in, not a textual component). After 40 symlinks
the walk gives up with ELOOP, as Linux does.

The host never resolves anything: each `lstat` is made on the root joined with
a prefix that this module already knows to be free of symlinks, so an
absolute link (`/etc/shadow`) or a `../../..` chain cannot reach a host file.
Image paths are `str` with surrogateescape, so non-UTF-8 names survive.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum

from slimmer.errors import PathError

MAX_SYMLINK_HOPS = 40
HEAD_BYTES = 256  # RootFS.head: an ELF header's ident, a #! line


class Kind(StrEnum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    FIFO = "fifo"
    CHAR_DEVICE = "char-device"
    BLOCK_DEVICE = "block-device"
    SOCKET = "socket"


def kind_of(mode: int) -> Kind:
    if stat.S_ISREG(mode):
        return Kind.FILE
    if stat.S_ISDIR(mode):
        return Kind.DIR
    if stat.S_ISLNK(mode):
        return Kind.SYMLINK
    if stat.S_ISFIFO(mode):
        return Kind.FIFO
    if stat.S_ISCHR(mode):
        return Kind.CHAR_DEVICE
    if stat.S_ISBLK(mode):
        return Kind.BLOCK_DEVICE
    return Kind.SOCKET


@dataclass(frozen=True)
class SymlinkHop:
    """One symlink passed on the way: where it is and what it says."""

    path: str  # canonical in-root path of the link itself
    target: str  # the link's text, unchanged


@dataclass(frozen=True)
class Resolved:
    """The outcome of a walk: the canonical path and every link passed."""

    path: str  # canonical in-root path: absolute, no symlink in it
    hops: tuple[SymlinkHop, ...]


@dataclass(frozen=True)
class Trees:
    """Directory trees: a path is in them when it is one of them or below
    one (one set lookup and one startswith, however many trees)."""

    exact: frozenset[str]
    prefixes: tuple[str, ...]

    @classmethod
    def of(cls, trees: Iterable[str]) -> Trees:
        listed = tuple(trees)
        return cls(frozenset(listed), tuple(tree + "/" for tree in listed))

    def __contains__(self, path: str) -> bool:
        return path in self.exact or path.startswith(self.prefixes)


def join(directory: str, name: str) -> str:
    """Join an in-root directory and a name without normalising anything."""
    if name.startswith("/"):
        return name
    if directory.endswith("/"):
        return directory + name
    return f"{directory}/{name}"


def parent(path: str) -> str:
    """The directory part of an absolute in-root path (`/` for `/x`)."""
    head = path.rsplit("/", 1)[0]
    return head or "/"


def basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]


MAX_PATH_BYTES = 4096  # PATH_MAX


def is_image_path(path: str) -> bool:
    """A path that can name something in an image: absolute, without NUL,
    at most PATH_MAX bytes. What comes from a container or a file is
    checked with it before it is used."""
    return path.startswith("/") and "\0" not in path and len(os.fsencode(path)) <= MAX_PATH_BYTES


def printable(path: str) -> str:
    """An image path as text: undecodable bytes shown as \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def parents(path: str) -> Iterator[str]:
    """Every ancestor directory of a canonical path, nearest first, `/` excluded."""
    current = parent(path)
    while current != "/":
        yield current
        current = parent(current)


class RootFS:
    """A read-only view of a directory tree as if it were `/`.

    The instance memoises `lstat` and `readlink` results, the directories a
    walk went through and the first bytes of files: images do not change
    while slim looks at them, and the loader emulation asks for the same
    directories thousands of times.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        root_str = os.fspath(root)
        if not os.path.isdir(root_str):
            raise PathError(root_str, errno.ENOENT, "root directory does not exist")
        self.root = root_str.rstrip("/") if root_str != "/" else ""
        self._lstat_cache: dict[str, os.stat_result | OSError] = {}
        self._readlink_cache: dict[str, str] = {}
        # given prefix -> (canonical components, links passed): see resolve
        self._walked: dict[str, tuple[tuple[str, ...], tuple[SymlinkHop, ...]]] = {}
        self._heads: dict[str, bytes] = {}

    def host_path(self, canonical: str) -> str:
        """The host path of a canonical in-root path (no symlink in it)."""
        return self.root + canonical if canonical != "/" else (self.root or "/")

    def _lstat(self, canonical: str) -> os.stat_result:
        cached = self._lstat_cache.get(canonical)
        if cached is None:
            try:
                cached = os.lstat(self.host_path(canonical))
            except OSError as exc:
                cached = exc
            self._lstat_cache[canonical] = cached
        if isinstance(cached, OSError):
            raise cached
        return cached

    def _readlink(self, canonical: str) -> str:
        target = self._readlink_cache.get(canonical)
        if target is None:
            target = os.readlink(self.host_path(canonical))
            self._readlink_cache[canonical] = target
        return target

    def resolve(self, path: str, *, follow: bool = True, cwd: str = "/") -> Resolved:
        """Resolve `path` inside the root.

        With follow=False a final symlink is not followed (like lstat): the
        result names the link itself. Relative paths start at `cwd`, which is
        itself resolved. Raises PathError with ENOENT, ENOTDIR, EACCES or
        ELOOP; the path of the error is the in-root path that failed.
        """
        if not path.startswith("/"):
            path = join(cwd, path)
        given = [c for c in path.split("/") if c not in ("", ".")]
        walked, current, hops = self._walked_prefix(given)
        pending = given[walked:][::-1]
        given_left = len(pending)  # the given components still to walk (at the bottom)
        while pending:
            if len(pending) == given_left and 0 < walked < len(given):
                # Every link met so far is followed through: the directory of
                # this prefix is known, for the next path that starts with it.
                self._walked["/" + "/".join(given[:walked])] = (tuple(current), tuple(hops))
            if len(pending) == given_left:
                given_left -= 1
                walked += 1
            component = pending.pop()
            if component == "..":
                if current:
                    current.pop()
                continue
            if component == ".":
                continue
            candidate = "/" + "/".join([*current, component])
            try:
                info = self._lstat(candidate)
            except FileNotFoundError:
                raise PathError(candidate, errno.ENOENT, "no such file or directory") from None
            except NotADirectoryError:
                raise PathError(candidate, errno.ENOTDIR, "not a directory") from None
            except PermissionError:
                raise PathError(candidate, errno.EACCES, "permission denied") from None
            except OSError as exc:
                raise PathError(
                    candidate, exc.errno or errno.EIO, exc.strerror or "error"
                ) from None
            if stat.S_ISLNK(info.st_mode) and (pending or follow):
                if len(hops) >= MAX_SYMLINK_HOPS:
                    raise PathError(path, errno.ELOOP, "too many levels of symbolic links")
                target = self._readlink(candidate)
                hops.append(SymlinkHop(candidate, target))
                if target.startswith("/"):
                    current = []
                pending.extend(c for c in reversed(target.split("/")) if c not in ("", "."))
                continue
            if pending and not stat.S_ISDIR(info.st_mode):
                raise PathError(candidate, errno.ENOTDIR, "not a directory")
            current.append(component)
        return Resolved("/" + "/".join(current), tuple(hops))

    def _walked_prefix(self, given: list[str]) -> tuple[int, list[str], list[SymlinkHop]]:
        """The longest proper prefix of the given components already walked
        (a directory, reached through the same links): how many components,
        the canonical components there and the links passed."""
        count = len(given) - 1
        while count > 0:
            known = self._walked.get("/" + "/".join(given[:count]))
            if known is not None:
                return count, list(known[0]), list(known[1])
            count -= 1
        return 0, [], []

    def lstat(self, canonical: str) -> os.stat_result:
        """lstat of a canonical path (as returned by resolve)."""
        return self._lstat(canonical)

    def stat(self, path: str, *, cwd: str = "/") -> os.stat_result:
        """stat through symlinks, inside the root."""
        return self._lstat(self.resolve(path, cwd=cwd).path)

    def exists(self, path: str, *, follow: bool = True, cwd: str = "/") -> bool:
        try:
            self.resolve(path, follow=follow, cwd=cwd)
        except PathError:
            return False
        return True

    def readlink(self, canonical: str) -> str:
        return self._readlink(canonical)

    def open_file(self, path: str, *, cwd: str = "/") -> tuple[Resolved, int]:
        """Open a regular file inside the root for reading; returns its
        resolution and a raw fd. FIFOs, devices and sockets are refused
        before any open, so nothing can block."""
        resolved = self.resolve(path, cwd=cwd)
        info = self._lstat(resolved.path)
        if stat.S_ISDIR(info.st_mode):
            raise PathError(resolved.path, errno.EISDIR, "is a directory")
        if not stat.S_ISREG(info.st_mode):
            raise PathError(resolved.path, errno.EINVAL, "not a regular file")
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            fd = os.open(self.host_path(resolved.path), flags)
        except OSError as exc:
            raise PathError(
                resolved.path, exc.errno or errno.EIO, exc.strerror or "error"
            ) from None
        return resolved, fd

    def read_bytes(self, path: str, *, cwd: str = "/", limit: int | None = None) -> bytes:
        _, fd = self.open_file(path, cwd=cwd)
        with os.fdopen(fd, "rb") as handle:
            return handle.read() if limit is None else handle.read(limit)

    def head(self, canonical: str) -> bytes:
        """The first HEAD_BYTES of a regular file at a canonical path (what
        tells an ELF object, a script's #! line), read once."""
        found = self._heads.get(canonical)
        if found is None:
            found = self.read_bytes(canonical, limit=HEAD_BYTES)
            self._heads[canonical] = found
        return found

    def read_text(self, path: str, *, cwd: str = "/") -> str:
        return self.read_bytes(path, cwd=cwd).decode("utf-8", "surrogateescape")

    def xattrs(self, canonical: str, names: Callable[[str], bool]) -> dict[str, bytes]:
        """The extended attributes of a canonical path (not following a final
        link) whose names `names` accepts; none where the file system has
        none or they cannot be read."""
        host = self.host_path(canonical)
        try:
            listed = os.listxattr(host, follow_symlinks=False)
        except OSError:
            return {}
        found = {}
        for name in sorted(listed):
            if not names(name):
                continue
            try:
                found[name] = os.getxattr(host, name, follow_symlinks=False)
            except OSError:
                continue
        return found

    def listdir(self, canonical: str) -> list[str]:
        """Names in a canonical directory, sorted."""
        return sorted(os.listdir(self.host_path(canonical)))

    def list_kinds(self, canonical: str) -> list[tuple[str, bool, bool]]:
        """Names in a canonical directory, sorted, each with whether it is a
        directory and whether a symlink (links not followed): what the
        directory itself says, no lstat per name where the file system tells."""
        with os.scandir(self.host_path(canonical)) as entries:
            found = [(e.name, e.is_dir(follow_symlinks=False), e.is_symlink()) for e in entries]
        return sorted(found)

    def symlinks(self, skipped: Trees) -> Iterator[str]:
        """Every symlink of the root, leaving out the skipped trees: a walk
        that reads only directories (their entries say which names are links)."""
        pending = ["/"]
        while pending:
            directory = pending.pop()
            try:
                found = self.list_kinds(directory)
            except OSError:
                continue
            for name, is_dir, is_link in found:
                path = join(directory, name)
                if path in skipped:
                    continue
                if is_link:
                    yield path
                elif is_dir:
                    pending.append(path)


def under(path: str, trees: Iterable[str]) -> bool:
    """Whether a canonical path is one of the trees or inside one."""
    return any(path == tree or path.startswith(tree + "/") for tree in trees)


def walk(
    fs: RootFS,
    top: str = "/",
    skipped: tuple[str, ...] = (),
    descend: Callable[[str], bool] | None = None,
) -> Iterator[tuple[str, os.stat_result]]:
    """Every entry under a canonical dir of the root, without following
    links, leaving out the skipped trees; into the directories `descend`
    accepts (all without it)."""
    left_out = Trees.of(skipped)
    pending = [top]
    while pending:
        directory = pending.pop()
        try:
            names = fs.listdir(directory)
        except OSError:
            continue
        for name in names:
            path = join(directory, name)
            if path in left_out:
                continue
            try:
                info = fs.lstat(path)
            except OSError:
                continue
            yield path, info
            if stat.S_ISDIR(info.st_mode) and (descend is None or descend(path)):
                pending.append(path)
