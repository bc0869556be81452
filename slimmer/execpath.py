"""How a program named by argv[0] is found in an image: one rule for the
sensor (which starts the app), the file set (which keeps the entrypoint)
and the checks made before a trace.

The rule is execvp's and a shell's: a name with a slash is taken as it is
(relative to the working directory); a bare name is looked up in the
image's PATH, an empty element meaning the working directory, and a
candidate counts only if it resolves (inside the root) to a regular file
with an exec bit: execve refuses anything else, so lookups go on past it.
"""

from __future__ import annotations

import stat

from slimmer.errors import PathError
from slimmer.rootfs import RootFS, join

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
EXEC_BITS = stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH


def is_executable(fs: RootFS, path: str, workdir: str = "/") -> bool:
    """Whether execve could run this path: a regular file with an exec bit."""
    try:
        info = fs.stat(path, cwd=workdir)
    except (PathError, OSError):
        return False
    return stat.S_ISREG(info.st_mode) and bool(info.st_mode & EXEC_BITS)


def find_program(fs: RootFS, name: str, search_path: str | None, workdir: str) -> str | None:
    """The path argv[0] names in the image, as given or found on PATH (not
    symlink-resolved: callers keep the links on the way); None if nothing
    executable is there. `search_path` is the image's PATH, None for the
    default one."""
    if not name:
        return None
    if "/" in name:
        path = name if name.startswith("/") else join(workdir, name)
        return path if is_executable(fs, path) else None
    for directory in (DEFAULT_PATH if search_path is None else search_path).split(":"):
        candidate = join(directory or workdir, name)
        if not candidate.startswith("/"):
            candidate = join(workdir, candidate)
        if is_executable(fs, candidate):
            return candidate
    return None
