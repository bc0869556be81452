"""Collect mode: select the micro image's files where they are, read the
package database, put the init in place (--init), plan --strip, and write
the rootfs tar the host validates.

Runs inside a container of the fat image, as root, after the sensor is
sealed: everything here is imported by slimmer.sensor.main before that.
"""

from __future__ import annotations

import fnmatch
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from slimmer.components import app_components
from slimmer.context import write_rootfs_tar
from slimmer.fileset import Entry, Selection, mount_points, select_files
from slimmer.packages import RELEASE_FILES, KeptPackages, PackageDB, read_package_db
from slimmer.pid1 import (
    NO_WHEEL,
    WHEEL_INIT_PATH,
    InitChoice,
    InitProblem,
    InitSource,
    choose_init,
    parse_init,
)
from slimmer.protocol import (
    CollectJob,
    CollectResult,
    FailureReason,
    InitWheel,
    SensorFailure,
    SensorLayout,
    StripJob,
    StrippedFile,
    StripSummary,
    UnstrippedFile,
)
from slimmer.rootfs import Kind, RootFS, parents
from slimmer.strip import StripPlan, plan_strip

MAX_WHEEL_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Refused:
    """Why the job cannot be done; the user can fix it (exit 5)."""

    message: str
    hint: str | None = None


def collect_files(
    job: CollectJob,
    layout: SensorLayout,
    progress: Callable[[int], Callable[[int], None]] | None = None,
) -> CollectResult | SensorFailure:
    """The collect job; the rootfs tar goes to the layout's output_tar.
    `progress`, given the bytes of file contents to write, returns what hears
    how many were written."""
    fs = RootFS("/")
    clock = Clock()
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as handle:
        mounts = tuple(mount_points(handle.read()))
    db = read_package_db(fs)
    clock.lap("packages")
    request = replace(
        job.selection,
        mount_points=mounts,
        skipped_trees=(*job.selection.skipped_trees, layout.root),
        release_files=release_files(fs, db) if job.package_records else (),
    )
    init = None
    if job.init is not None:
        chosen = prepare_init(fs, job, layout)
        if isinstance(chosen, Refused):
            return SensorFailure(FailureReason.BAD_INPUT, chosen.message, chosen.hint)
        init = chosen
        request = replace(request, init=(init.path,))
        clock.lap("init")
    selection = select_files(fs, request, db)
    clock.lap("select")
    kept = db.kept(fs, [entry.path for entry in selection.entries])
    clock.lap("packages")
    plan = None
    if job.strip is not None:
        plan = plan_strip(fs, regular_files(selection), protection(kept, job.strip))
        selection = with_sizes(selection, plan)
        clock.lap("strip")
    components = app_components(
        fs, regular_files(selection), kept.owner_map() if kept.manager else set()
    )
    clock.lap("components")
    total = sum(entry.size for entry in selection.entries if entry.kind is Kind.FILE)
    with open(layout.output_tar, "wb") as out:
        write_rootfs_tar(fs, selection, out, plan, progress(total) if progress else None)
    clock.lap("tar")
    return CollectResult(
        selection=selection,
        packages=kept,
        strip=summary(plan) if plan is not None else None,
        init=init,
        components=components,
        seconds=clock.seconds,
    )


class Clock:
    """Seconds spent in each step (a step named twice adds up)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.monotonic()

    def lap(self, step: str) -> None:
        now = time.monotonic()
        self.seconds[step] = round(self.seconds.get(step, 0.0) + now - self._last, 3)
        self._last = now


def release_files(fs: RootFS, db: PackageDB) -> tuple[str, ...]:
    """The files naming the distribution, when there is a package database
    whose records scanners will read."""
    if db.manager is None:
        return ()
    return tuple(path for path in RELEASE_FILES if fs.exists(path))


# -- --init ----------------------------------------------------------------------


def prepare_init(fs: RootFS, job: CollectJob, layout: SensorLayout) -> InitChoice | Refused:
    """The image's own init, else the wheel's binary (from the run dir) put
    at WHEEL_INIT_PATH when the image can run it."""
    wheel = NO_WHEEL
    data = b""
    if job.init is InitWheel.PROVIDED:
        with open(layout.init_binary, "rb") as handle:
            data = handle.read(MAX_WHEEL_BYTES + 1)
        wheel = parse_init(data, "the dumb-init wheel's binary")
    env = job.selection.env
    chosen = choose_init(fs, env, job.selection.workdir, wheel)
    if isinstance(chosen, InitProblem):
        return Refused(chosen.reason, "build without --init, or add tini or dumb-init to the image")
    if chosen.source is InitSource.WHEEL:
        problem = place_file(fs, WHEEL_INIT_PATH, data, job.selection.engine_mtime or 0)
        if problem is not None:
            return problem
    return chosen


def place_file(fs: RootFS, path: str, data: bytes, mtime: int) -> Refused | None:
    """Write `data` at `path` (mode 0755, root's), making the directories
    above it that the image lacks; what slim makes gets `mtime`, and the
    image's own directory it goes into keeps its times, so the collected
    tar stays deterministic."""
    missing: list[str] = []
    existing = "/"
    for directory in reversed(list(parents(path))):
        try:
            info = os.lstat(fs.host_path(directory))
        except FileNotFoundError:
            missing.append(directory)
            continue
        if missing or not stat.S_ISDIR(info.st_mode):
            return Refused(f"the image has {directory} as something else than a directory, "
                           f"where --init puts dumb-init ({path})")  # fmt: skip
        existing = directory
    if os.path.lexists(fs.host_path(path)):
        return Refused(f"the image already has {path}, where --init puts dumb-init")
    kept_times = os.lstat(fs.host_path(existing))
    for directory in missing:
        os.mkdir(fs.host_path(directory), 0o755)
        os.chmod(fs.host_path(directory), 0o755)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(fs.host_path(path), flags, 0o755)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        os.fchmod(handle.fileno(), 0o755)
    for made in [path, *reversed(missing)]:
        os.utime(fs.host_path(made), (mtime, mtime), follow_symlinks=False)
    os.utime(
        fs.host_path(existing),
        ns=(kept_times.st_atime_ns, kept_times.st_mtime_ns),
        follow_symlinks=False,
    )
    return None


# -- --strip ---------------------------------------------------------------------


def regular_files(selection: Selection) -> list[str]:
    return [entry.path for entry in selection.entries if entry.kind is Kind.FILE]


def protection(kept: KeptPackages, job: StripJob) -> Callable[[str], bool]:
    """A file is protected when a package record gives its digest (the
    records must stay true; scanners and `dpkg --verify` check them) or a
    --strip-except glob matches it."""
    verified = {
        record.path for item in kept.packages for record in item.kept_files if record.digest
    }
    globs = job.protect

    def protected(path: str) -> bool:
        return path in verified or any(fnmatch.fnmatchcase(path, glob) for glob in globs)

    return protected


def with_sizes(selection: Selection, plan: StripPlan) -> Selection:
    """The selection with the sizes the tar will have: the host checks them."""
    entries: list[Entry] = [
        replace(entry, size=plan.new_size(entry.path, entry.size)) for entry in selection.entries
    ]
    return replace(selection, entries=tuple(entries))


def summary(plan: StripPlan) -> StripSummary:
    return StripSummary(
        stripped=tuple(
            StrippedFile(path, result.old_size, result.new_size, len(result.removed))
            for path, result in sorted(plan.results.items())
        ),
        refused=tuple(UnstrippedFile(path, why) for path, why in plan.refused),
        protected=plan.protected,
    )
