"""Content that follows the app, not the package database: what the app
will read or run on routes the probes did not take.

The app's own content (app-content). A directory the app read a data file
from (not a program or library it loaded) is a content root when

- no OS package lists it or has a file in it or in its parent (an app's
  docroot, its install dir: the rule before), or
- the file the app read there is one no package owns, and the directory
  is outside the system trees (/etc, /usr but /usr/local, /lib*, /bin,
  /sbin, /boot, /run, the package managers' and caches' dirs under /var)
  and no __pycache__: a docroot a web server's package made
  (/var/www/html) or also ships files in;

and from a root, the regular files no package owns are kept, in it and in
its subfolders, recursively. Code trees (node_modules, site-packages,
dist-packages, __pycache__, .git, .hg, .svn, bower_components) are not
walked into: the code closure keeps what of them is used; a root inside
one keeps only its own files, as before.

Executable siblings (program-sibling). A program the app ran from a folder
that is not on PATH (the image's or the default one), and at least half of
whose regular files are executable, is one of a folder of programs (a CGI
dir such as /usr/lib/cgi-bin, whoever owns the folder; not an app's own
dir that holds its start script among its sources): its other executable
regular files that no package owns are kept; the caller gives them the
code closure and the ELF closure.

Bounds (measured in benchmarks/coverage.py): a content root keeps at most
MAX_FILES files and MAX_BYTES bytes; a subfolder that would go over, or
that holds more than MAX_DIRS folders, is left out whole, with a warning
naming it (--include keeps it); at most MAX_DEPTH levels below the root.
A folder of programs keeps at most MAX_SIBLINGS programs (else none, with
a warning).
"""

from __future__ import annotations

import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from slimmer.errors import PathError
from slimmer.execpath import EXEC_BITS
from slimmer.packages import PackagedDirs
from slimmer.rootfs import RootFS, basename, parent, parents, under, walk

MAX_FILES = 4096
MAX_BYTES = 32 * 1024 * 1024
MAX_DEPTH = 16
MAX_DIRS = 10_000  # folders walked below one subfolder of a content root
MAX_SIBLINGS = 512
SYSTEM_TREES = (
    "/etc",
    "/usr",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/bin",
    "/sbin",
    "/boot",
    "/run",
    "/var/lib/dpkg",
    "/var/lib/apt",
    "/var/lib/apk",
    "/var/lib/ucf",
    "/var/lib/systemd",
    "/var/lib/pam",
    "/var/cache",
    "/var/log",
)
NOT_SYSTEM = ("/usr/local",)
CODE_TREES = frozenset(
    {
        "node_modules",
        "site-packages",
        "dist-packages",
        "__pycache__",
        ".git",
        ".hg",
        ".svn",
        "bower_components",
    }
)


@dataclass(frozen=True)
class Kept:
    path: str
    detail: str


@dataclass(frozen=True)
class ContentFound:
    kept: tuple[Kept, ...]
    warnings: tuple[str, ...]


def in_code_tree(path: str) -> bool:
    return any(part in CODE_TREES for part in path.split("/"))


def is_system(path: str) -> bool:
    """In a system tree, or above one (/var holds /var/lib/dpkg)."""
    if under(path, NOT_SYSTEM):
        return False
    return under(path, SYSTEM_TREES) or any(tree.startswith(path + "/") for tree in SYSTEM_TREES)


def _files(
    fs: RootFS,
    top: str,
    owned: Callable[[str], bool],
    skipped: tuple[str, ...],
    deep: bool,
) -> Iterator[tuple[str, int] | None]:
    """The unowned regular files in `top` and, when deep, below it (code
    trees and system trees left out), each with its size; None for each
    folder met below `top`."""

    def descend(path: str) -> bool:
        depth = path.count("/") - top.count("/")
        return (
            deep
            and depth <= MAX_DEPTH
            and basename(path) not in CODE_TREES
            and not (is_system(path))
        )

    for path, info in walk(fs, top, skipped, descend):
        if stat.S_ISDIR(info.st_mode) and descend(path):
            yield None
        elif stat.S_ISREG(info.st_mode) and not owned(path):
            yield path, info.st_size


def _bounded(files: Iterator[tuple[str, int] | None], budget: list[int]) -> list[str] | None:
    """The paths of a subfolder's files, taken off the budget (files, bytes,
    folders); None, and the budget untouched, when they go over it."""
    paths, total, folders = [], 0, 0
    for item in files:
        if item is None:
            folders += 1
        else:
            paths.append(item[0])
            total += item[1]
        if len(paths) > budget[0] or total > budget[1] or folders > MAX_DIRS:
            return None
    budget[0] -= len(paths)
    budget[1] -= total
    return sorted(paths)


def content_roots(
    read: Iterable[str], layout: PackagedDirs, owned: Callable[[str], bool]
) -> dict[str, tuple[str, bool]]:
    """Directory -> (the file the app read there, whether to walk below it)."""
    roots: dict[str, tuple[str, bool]] = {}
    for path in sorted(read):
        directory = parent(path)
        if directory == "/" or directory in roots:
            continue
        if in_code_tree(directory):
            if not layout.is_os_content(directory):
                roots[directory] = (path, False)
        elif not layout.is_os_content(directory) or not (owned(path) or is_system(directory)):
            roots[directory] = (path, True)
    # Not below another root that is walked already: the ancestors of each
    # directory are looked up (each root against all others was quadratic).
    trees = {d for d, (_, deep) in roots.items() if deep}
    return {d: value for d, value in roots.items() if not any(a in trees for a in parents(d))}


def app_content(
    fs: RootFS,
    read: Iterable[str],
    layout: PackagedDirs,
    owned: Callable[[str], bool],
    skipped: tuple[str, ...] = (),
) -> ContentFound:
    """The app's own files beside and below what it read."""
    kept: list[Kept] = []
    warnings: list[str] = []
    for directory, (trigger, deep) in sorted(content_roots(read, layout, owned).items()):
        detail = f"in {directory}, from which the app read {trigger}"
        top_files = [item for item in _files(fs, directory, owned, skipped, False) if item]
        kept += [Kept(path, detail) for path, _ in top_files]
        budget = [MAX_FILES - len(top_files), MAX_BYTES - sum(size for _, size in top_files)]
        if not deep:
            continue
        for subdir, info in walk(fs, directory, skipped, lambda _: False):
            if not stat.S_ISDIR(info.st_mode) or basename(subdir) in CODE_TREES:
                continue
            if is_system(subdir):  # /var/lib/dpkg below a root of /var/lib/app? no: below /var
                continue
            files = _bounded(_files(fs, subdir, owned, skipped, True), budget)
            if files is None:
                warnings.append(
                    f"app content: {subdir} is larger than the bound ({MAX_FILES} files, "
                    f"{MAX_BYTES // 2**20} MiB under {directory}, {MAX_DIRS} folders): left out "
                    f"(--include {subdir} keeps it)"
                )
                continue
            kept += [Kept(path, detail) for path in files]
    return ContentFound(tuple(kept), tuple(warnings))


def search_dirs(fs: RootFS, path_lists: Iterable[str]) -> set[str]:
    """The canonical dirs of PATH lists."""
    dirs = set()
    for path_list in path_lists:
        for directory in path_list.split(":"):
            if not directory.startswith("/"):
                continue
            try:
                dirs.add(fs.resolve(directory).path)
            except PathError:
                continue
    return dirs


def program_siblings(
    fs: RootFS,
    ran: Iterable[str],
    on_path: set[str],
    owned: Callable[[str], bool],
    skipped: tuple[str, ...] = (),
) -> ContentFound:
    """The other programs of the folders of programs the app ran one from."""
    kept: list[Kept] = []
    warnings: list[str] = []
    folders: dict[str, str] = {}
    for program in sorted(ran):
        folders.setdefault(parent(program), program)
    for directory, program in sorted(folders.items()):
        if directory == "/" or directory in on_path or under(directory, skipped):
            continue
        listed = walk(fs, directory, skipped, lambda _: False)
        regular = [(p, i) for p, i in listed if stat.S_ISREG(i.st_mode)]
        programs = [p for p, i in regular if i.st_mode & EXEC_BITS]
        if 2 * len(programs) < len(regular):
            continue  # an app's own dir with a start script: not a folder of programs
        found = [
            path
            for path in programs
            if path not in folders.values() and ".so" not in basename(path) and not owned(path)
        ]
        if len(found) > MAX_SIBLINGS:
            warnings.append(
                f"{directory} holds {len(found)} programs, more than {MAX_SIBLINGS}: "
                f"none of them kept beside {program} (--include {directory} keeps them)"
            )
            continue
        detail = f"beside {program}, which the app ran"
        kept += [Kept(path, detail) for path in found]
    return ContentFound(tuple(kept), tuple(warnings))
