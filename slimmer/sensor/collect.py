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
from slimmer.elf import ElfIdent, read_ident
from slimmer.errors import PathError
from slimmer.fileset import Entry, Selection, SelectionRequest, mount_points, select_files
from slimmer.loader import Loader
from slimmer.packages import RELEASE_FILES, KeptPackages, PackageDB, read_package_db
from slimmer.pid1 import (
    NO_WHEEL,
    WHEEL_INIT_PATH,
    InitChoice,
    InitProblem,
    InitSource,
    choose_init,
    closure_problem,
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
from slimmer.trace import Access, PathAction

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
    fs: RootFS | None = None,
) -> CollectResult | SensorFailure:
    """The collect job; the rootfs tar goes to the layout's output_tar.
    `progress`, given the bytes of file contents to write, returns what hears
    how many were written. `fs`: the image's tree (default: this container's
    /, a fresh container of the image)."""
    fs = fs if fs is not None else RootFS("/")
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
        protected = protection(kept, job.strip, read_as_data(fs, job.selection))
        plan = plan_strip(fs, regular_files(selection), protected)
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
    env, workdir = job.selection.env, job.selection.workdir
    chosen = choose_init(fs, env, workdir, wheel, running_machine())
    if isinstance(chosen, InitProblem):
        return Refused(chosen.reason, "build without --init, or add tini or dumb-init to the image")
    if chosen.source is InitSource.WHEEL:
        problem = place_file(fs, WHEEL_INIT_PATH, data, job.selection.engine_mtime or 0)
        if problem is not None:
            return problem
        missing = closure_problem(fs, WHEEL_INIT_PATH, env, workdir)
        if missing is not None:
            return Refused(
                f"--init: dumb-init from the wheel cannot run in the image: {missing.reason}",
                "build without --init, or add tini or dumb-init to the image",
            )
    return chosen


def running_machine() -> ElfIdent | None:
    """The ELF class, byte order and machine of this process's own program:
    what the engine runs here (slim does not emulate)."""
    try:
        with open("/proc/self/exe", "rb") as handle:
            ident = read_ident(handle.read(64))
    except OSError:
        return None
    return ident if isinstance(ident, ElfIdent) else None


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


def protection(
    kept: KeptPackages, job: StripJob, read_by_app: frozenset[str] = frozenset()
) -> Callable[[str], str | None]:
    """Why a file is left as it is, or None: a package record gives its
    digest (the records must stay true; scanners and `dpkg --verify` check
    them), the app read it as data (`read_by_app`: its bytes may be
    checked), or a --strip-except glob matches it."""
    verified = {
        record.path: item.package.name
        for item in kept.packages
        for record in item.kept_files
        if record.digest
    }
    globs = job.protect

    def protected(path: str) -> str | None:
        if path in verified:
            return f"the package record of {verified[path]} has its digest"
        if path in read_by_app:
            return "the app read it, and no program that ran loads it: its bytes may be checked"
        glob = next((glob for glob in globs if fnmatch.fnmatchcase(path, glob)), None)
        return f"--strip-except {glob}" if glob is not None else None

    return protected


def read_as_data(fs: RootFS, request: SelectionRequest) -> frozenset[str]:
    """The files the trace shows opened or read that the loading of the
    programs that ran does not explain: what the app read as data.

    inotify sees ld.so read a library's first bytes exactly as it sees an
    app read the whole file (OPEN and ACCESS both), and the kernel's exec
    reads the program too. So a read is the loader's when the file was
    executed (its /proc/N/exe, or an exec seen at the system call), or is
    in the link map slimmer.loader computes for the executed programs
    (their interpreters, the libraries they need, what libc loads itself:
    NSS modules, libgcc_s, gconv modules); any other read is the app's.
    A library dlopen'ed by name (a plugin, an extension module) counts as
    read: left as it is, the safe side."""
    executed: list[str] = []
    read: set[str] = set()
    for row in request.traced:
        access = set(row.access)
        if Access.CREATED in access or not access & {Access.OPENED, Access.READ}:
            continue
        canonical = _canonical(fs, row.path, request.workdir)
        if canonical is None:
            continue
        if Access.EXECUTED in access:
            executed.append(canonical)
        else:
            read.add(canonical)
    for lookup in request.lookups:
        if lookup.action is PathAction.EXEC and lookup.existed:
            canonical = _canonical(fs, lookup.path, request.workdir)
            if canonical is not None:
                executed.append(canonical)
    if not read:
        return frozenset()
    loader = Loader(fs, env=request.env, cwd=request.workdir)
    closure = loader.closure(executed, runtime_extras=request.runtime_extras, gconv=True)
    return frozenset(read - set(closure.files) - set(executed))


def _canonical(fs: RootFS, path: str, workdir: str) -> str | None:
    try:
        return fs.resolve(path, cwd=workdir).path
    except PathError:
        return None


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
        protected=tuple(UnstrippedFile(path, why) for path, why in plan.protected),
    )
