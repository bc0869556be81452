"""What keeps the sensor the sensor in a container it does not trust.

The image and the app it runs may be hostile. The sensor's first act is to
make itself not dumpable (`make_undumpable`): the app may run as root, as
the sensor does, and the kernel's ptrace access check then asks no
capability of it for a dumpable process of its own uid: it could write the
sensor's memory (/proc/1/mem), trace it, read its environment and take its
descriptors (the seccomp listener among them). A process that is not
dumpable passes that check only for a caller with CAP_SYS_PTRACE, which
the engine does not give. Before the app starts, the
sensor has loaded every module it will use; `seal` then removes its bundle
from the container's file system (the running interpreter keeps its mapped
files) and empties the import path, so nothing the app writes can be
loaded into it later. After the app, `end_all_processes` kills and reaps
every other process of the container, so nothing the app left behind runs
while `write_private` puts the result where the host reads it: each
directory on the way is made anew if it is not a real directory, and the
file is created exclusively, without following links.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import stat
import sys
import time
from collections.abc import Iterable

from slimmer.protocol import RUN_SUBDIR, SensorLayout
from slimmer.sensor.syscalls.kernel import PR_SET_DUMPABLE, load_libc

END_TIMEOUT = 5.0


def make_undumpable() -> None:
    """Make this process unreadable, unwritable and untraceable for any
    process without CAP_SYS_PTRACE (its threads and its children until they
    exec, too). Its own /proc files stay its own to read."""
    libc = load_libc()
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0)")


def seal(layout: SensorLayout) -> None:
    """Remove the bundle (all but the run dir) and stop further imports."""
    with os.scandir(layout.root) as entries:
        for entry in entries:
            if entry.name == RUN_SUBDIR:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
    sys.path[:] = []
    sys.path_importer_cache.clear()
    sys.meta_path[:] = [
        finder for finder in sys.meta_path if getattr(finder, "__name__", "") != "PathFinder"
    ]


def _descendants(root_pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents[int(name)] = int(fields[1])
    found, frontier = [], [root_pid]
    while frontier:
        current = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == current]
        found += children
        frontier += children
    return found


def end_all_processes(timeout: float = END_TIMEOUT) -> None:
    """Kill every process of the container but this one and reap them. As
    PID 1 that is kill(-1); otherwise (an engine that adds its own init) our
    descendants."""
    targets = [-1] if os.getpid() == 1 else _descendants(os.getpid())
    for pid in targets:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.01)


def _real_directory(path: str) -> None:
    """Make `path` a real directory of root's only, replacing whatever else
    (a link, a file) stands there."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        os.mkdir(path, 0o700)
        return
    if not stat.S_ISDIR(info.st_mode):
        os.unlink(path)
        os.mkdir(path, 0o700)


def write_private(layout: SensorLayout, path: str, chunks: Iterable[str]) -> None:
    """Write a file of the run dir (ASCII text, in pieces), trusting
    nothing that is there."""
    _real_directory(layout.root)
    _real_directory(layout.run_dir)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if stat.S_ISDIR(info.st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    # binary: a text file would look its codec up, and the import path is
    # gone once sealed (str.encode's UTF-8 needs no lookup)
    with os.fdopen(fd, "wb", buffering=1 << 20) as handle:
        for chunk in chunks:
            handle.write(chunk.encode())


def clear_run_dir(layout: SensorLayout, keep: tuple[str, ...] = ()) -> None:
    """Make the run dir a real directory again and empty it but for `keep`
    (files the sensor itself wrote since the app ended): once the app's
    processes are gone, what is in it is only what the host puts there."""
    _real_directory(layout.root)
    _real_directory(layout.run_dir)
    with os.scandir(layout.run_dir) as entries:
        for entry in entries:
            if entry.path in keep and entry.is_file(follow_symlinks=False):
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)


def read_private(path: str, limit: int = 1 << 30) -> bytes:
    """A regular file of the run dir, not through a link."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise OSError(f"{path} is not a regular file")
        return handle.read(limit)
