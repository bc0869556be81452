"""inotify over a whole tree: what was opened, read, listed, written, created.

One watch per directory (inotify reports the children's events to the
directory's watch). The walk that sets the watches produces events of its
own; `drain` discards them before the app starts. A reader thread empties
the queue continuously, adds a watch to each new directory at once, and
marks the trace incomplete on IN_Q_OVERFLOW.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntFlag
from typing import Literal

import inotify_simple

from slimmer.rootfs import Kind, Trees, kind_of
from slimmer.sensor.budget import ByteBudget, path_cost
from slimmer.sensor.pristine import TreeChanges
from slimmer.trace import GONE

# inotify_simple looks libc up with ctypes.util.find_library, which runs the
# image's ldconfig or gcc; the sensor's own libc is already loaded.
inotify_simple._libc = ctypes.CDLL(None, use_errno=True)

IN_ACCESS = 0x1
IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_CLOSE_WRITE = 0x8
IN_OPEN = 0x20
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x1000000
IN_DONT_FOLLOW = 0x2000000
IN_ISDIR = 0x40000000

WATCH_MASK = (
    IN_ACCESS
    | IN_MODIFY
    | IN_CLOSE_WRITE
    | IN_OPEN
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_ONLYDIR
    | IN_DONT_FOLLOW
)

# Events that change a path (IN_ATTRIB only when changes are tracked: chmod,
# chown, utimes, xattrs, which the trace does not record).
CHANGING = (
    IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
)
# Paths whose changes are tracked at most (track_changes); past it the
# changes are not known (TreeChanges.overflow): the collect runs elsewhere.
MAX_TRACKED_CHANGES = 1_000_000

WATCH_LIMIT_SYSCTL = "fs.inotify.max_user_watches"
INSTANCE_LIMIT_SYSCTL = "fs.inotify.max_user_instances"
DEFAULT_SEEN_BYTES = 64 * 1024 * 1024  # where no budget is given


class Access(IntFlag):
    """What happened to a path while it was traced."""

    OPENED = 1
    READ = 2
    EXECUTED = 4
    LISTED = 8
    WRITTEN = 16
    CREATED = 32
    DELETED = 64

    def names(self) -> list[str]:
        return [flag.name.lower() for flag in Access if flag in self and flag.name]


class WatchLimitError(Exception):
    """The kernel refused another watch or inotify instance."""

    def __init__(self, sysctl: str, count: int) -> None:
        super().__init__(
            f"the inotify limit {sysctl} was reached after {count} watches; "
            f"raise it on the host: sysctl -w {sysctl}=1048576"
        )
        self.sysctl = sysctl


@dataclass(frozen=True)
class WatchStats:
    watches: int
    events: int
    overflow: bool


class TreeWatcher:
    """Watches every directory under a root except the skipped trees. The
    paths it keeps take their cost from `budget` (slimmer/sensor/budget.py);
    past it they are counted in `dropped`.

    With `track_changes`, it also notes which paths the app made (their
    first change is their creation) and which of the image's it changed,
    and keeps each directory's stat from before the app ran (see
    slimmer.sensor.pristine)."""

    def __init__(
        self,
        skipped: tuple[str, ...],
        budget: ByteBudget | None = None,
        *,
        track_changes: bool = False,
    ) -> None:
        self.skipped = Trees.of(skipped)
        self.mask = WATCH_MASK | (IN_ATTRIB if track_changes else 0)
        self.track_changes = track_changes
        self.made_first: dict[str, bool] = {}  # path -> its first change was its creation
        self.changes_lost = False  # more changed paths than MAX_TRACKED_CHANGES
        self.before: dict[str, os.stat_result] = {}  # directory -> its stat at set-up
        self.links: list[str] = []  # the symlinks the set-up walk passed (track_changes)
        self.unwatched = 0  # directories that are there but could not be watched
        self.budget = budget if budget is not None else ByteBudget(DEFAULT_SEEN_BYTES)
        self.dropped = 0  # paths seen but not kept: the budget was spent
        try:
            self.inotify = inotify_simple.INotify(nonblocking=True)
        except OSError as exc:
            if exc.errno == errno.EMFILE:
                raise WatchLimitError(INSTANCE_LIMIT_SYSCTL, 0) from None
            raise
        self.dirs: dict[int, str] = {}
        self.seen: dict[str, Access] = {}
        self.overflow = False
        self.events = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # ---- set-up

    def _add(self, directory: str) -> bool:
        try:
            wd = self.inotify.add_watch(directory, self.mask)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise WatchLimitError(WATCH_LIMIT_SYSCTL, len(self.dirs)) from None
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                self.unwatched += 1  # no permission: what happens there is not seen
            return False  # vanished, not a directory, no permission
        self.dirs[wd] = directory
        return True

    def watch_tree(self, root: str = "/", progress: Callable[[int], None] | None = None) -> int:
        """Add a watch to every directory under root; returns the count.
        `progress` hears the count every 1000 directories."""
        pending = [root]
        added = 0
        while pending:
            directory = pending.pop()
            if directory in self.skipped or not self._add(directory):
                continue
            if self.track_changes:
                with contextlib.suppress(OSError):
                    self.before[directory] = os.lstat(directory)
            added += 1
            if added % 1000 == 0:
                self.drain()  # keep the queue from overflowing with our own events
                if progress is not None:
                    progress(added)
            try:
                with os.scandir(directory) as entries:
                    for entry in entries:
                        path = entry.path if directory != "/" else "/" + entry.name
                        if entry.is_dir(follow_symlinks=False):
                            pending.append(path)
                        elif self.track_changes and entry.is_symlink():
                            self.links.append(path)
            except OSError:
                self.unwatched += 1  # watched, but its entries (and subtrees) are not known
                continue
        return added

    def drain(self) -> None:
        """Discard every queued event (the sensor's own set-up), unparsed."""
        while True:
            try:
                if not os.read(self.inotify.fileno(), 1 << 20):
                    break
            except BlockingIOError:
                break
        self.seen.clear()
        self.made_first.clear()
        self.overflow = False
        self.events = 0

    # ---- during the run

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="inotify-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            events = self.inotify.read(timeout=100)
            if events:
                self._record(events)

    def stop(self) -> WatchStats:
        """Stop reading, after taking what is still queued."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        while events := self.inotify.read(timeout=0):
            self._record(events)
        self.inotify.close()
        return WatchStats(len(self.dirs), self.events, self.overflow)

    def mark(self, path: str, access: Access) -> None:
        with self._lock:
            self._see(path, access)

    def _see(self, path: str, access: Access) -> None:
        """Keep `access` of `path` (the lock held)."""
        known = self.seen.get(path)
        if known is None:
            if not self.budget.take(path_cost(path)):
                self.dropped += 1
                return
            known = Access(0)
        self.seen[path] = known | access

    def _record(self, events: list[inotify_simple.Event]) -> None:
        with self._lock:
            for wd, mask, _, name in events:
                self.events += 1
                if mask & IN_Q_OVERFLOW:
                    self.overflow = True
                    continue
                directory = self.dirs.get(wd)
                if directory is None:
                    continue
                if mask & IN_IGNORED:
                    del self.dirs[wd]
                    continue
                if name:
                    path = directory + "/" + name if directory != "/" else "/" + name
                else:
                    path = directory
                if self.track_changes and mask & CHANGING:
                    self._changed(path, bool(mask & IN_CREATE))
                is_dir = bool(mask & IN_ISDIR)
                access = Access(0)
                if mask & IN_OPEN:
                    access |= Access.OPENED
                if mask & IN_ACCESS:
                    access |= Access.LISTED if is_dir else Access.READ
                if mask & (IN_MODIFY | IN_CLOSE_WRITE):
                    access |= Access.WRITTEN
                if mask & (IN_CREATE | IN_MOVED_TO):
                    access |= Access.CREATED
                if mask & (IN_DELETE | IN_MOVED_FROM):
                    access |= Access.DELETED
                if access:
                    self._see(path, access)
                    if name and access & (Access.CREATED | Access.DELETED):
                        self._see(directory, Access.WRITTEN)
                if is_dir and mask & (IN_CREATE | IN_MOVED_TO):
                    self._watch_new_tree(path)

    def _watch_new_tree(self, top: str) -> None:
        """A directory appeared: watch it now, and count what was made in it
        before the watch existed as created too."""
        pending = [top]
        while pending:
            directory = pending.pop()
            if directory in self.skipped or not self._add(directory):
                continue
            try:
                with os.scandir(directory) as entries:
                    for entry in entries:
                        self._see(entry.path, Access.CREATED)
                        if self.track_changes:
                            self._changed(entry.path, True)
                        if entry.is_dir(follow_symlinks=False):
                            pending.append(entry.path)
            except OSError:
                continue

    def _changed(self, path: str, created: bool) -> None:
        """Note a path's first change, and whether it was its creation (the
        lock held)."""
        if path in self.made_first:
            return
        if len(self.made_first) >= MAX_TRACKED_CHANGES:
            self.changes_lost = True
            return
        self.made_first[path] = created

    def changes(self) -> TreeChanges:
        """What the app made and changed (with track_changes), after stop()."""
        made = frozenset(p for p, first in self.made_first.items() if first)
        changed = sorted(
            p for p, first in self.made_first.items() if not first and p not in self.skipped
        )
        return TreeChanges(
            made, tuple(changed), self.overflow or self.changes_lost, unwatched=self.unwatched
        )


def file_kind(path: str) -> Kind | Literal["gone"]:
    """The kind of a path now, or "gone"."""
    try:
        return kind_of(os.lstat(path).st_mode)
    except OSError:
        return GONE
