"""The sensor's entry point inside the container (PID 1 in trace mode)."""

from __future__ import annotations

import os
import stat
import sys
import threading
import time
from collections.abc import Callable

from slimmer import wire
from slimmer.depsreport import closure_report, closure_tree
from slimmer.errors import SlimError
from slimmer.execpath import DEFAULT_PATH, find_program
from slimmer.fileset import walk
from slimmer.loader import Loader
from slimmer.packages import read_package_db
from slimmer.pid1 import WHEEL_INIT_PATH
from slimmer.protocol import (
    EXIT_SENSOR_FAILED,
    AppExited,
    AppIdentity,
    AppStatus,
    CollectJob,
    CollectWritten,
    DepsJob,
    DepsResult,
    FailureReason,
    InventoryJob,
    InventoryResult,
    Note,
    Progress,
    ProgressStep,
    RunConfig,
    SensorFailure,
    SensorLayout,
    SensorMessage,
    SensorResult,
    TraceJob,
    TraceResult,
    TraceWritten,
    Watching,
    encode_result,
    message_line,
)
from slimmer.rootfs import RootFS
from slimmer.sensor.budget import ByteBudget
from slimmer.sensor.collect import collect_files
from slimmer.sensor.init import Supervisor, TracedSupervisor
from slimmer.sensor.pristine import PristineView, hard_linked, links_in, why_not_intact
from slimmer.sensor.seal import (
    clear_run_dir,
    end_all_processes,
    make_undumpable,
    read_private,
    seal,
    write_private,
)
from slimmer.sensor.syscalls import PathLog, SyscallTracer, TracingUnavailable
from slimmer.sensor.users import AppUser, resolve_user
from slimmer.sensor.watch import Access, TreeWatcher, WatchLimitError, file_kind
from slimmer.trace import Access as TracedAccess
from slimmer.trace import Lookup, PathAction, SyscallReport, TracedFile

PROC_SAMPLE_SECONDS = 0.05
HANDOVER_TIMEOUT = 900.0  # how long a trace waits for its collect job
HANDOVER_POLL = 0.005
TRACER_SWITCH_INTERVAL = 0.0001
PROGRESS_SECONDS = 0.25


def say(message: SensorMessage) -> None:
    sys.stderr.write(message_line(message) + "\n")
    sys.stderr.flush()


def progress_sayer(
    step: ProgressStep, total: int | None = None, every: float = PROGRESS_SECONDS
) -> Callable[[int], None]:
    """A progress callback that says how far a step got, at most every `every` seconds."""
    last = time.monotonic()

    def heard(done: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= every:
            last = now
            say(Progress(step, done, total))

    return heard


def write_result(layout: SensorLayout, result: SensorResult) -> None:
    write_private(layout, layout.result_path, encode_result(result))


def fail(
    layout: SensorLayout,
    reason: FailureReason,
    message: str,
    hint: str | None = None,
    sysctl: str | None = None,
) -> int:
    say(Note(f"error: {message}"))
    write_result(layout, SensorFailure(reason, message, hint, sysctl))
    return EXIT_SENSOR_FAILED


def app_environment(env: dict[str, str], user: AppUser) -> dict[str, str]:
    """The image's ENV, as Docker gives it to the app: HOSTNAME from the
    container, HOME from the user's passwd entry unless the image sets it."""
    env = dict(env)
    env.setdefault("PATH", DEFAULT_PATH)
    if "HOSTNAME" in os.environ:
        env.setdefault("HOSTNAME", os.environ["HOSTNAME"])
    env.setdefault("HOME", user.home)
    return env


class ExecSampler:
    """Samples /proc/*/exe: inotify cannot tell an exec from a read."""

    def __init__(self, watcher: TreeWatcher, own_dir: str) -> None:
        self.watcher = watcher
        self.own_dir = own_dir
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="exec-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(PROC_SAMPLE_SECONDS):
            self.sample()

    def sample(self) -> None:
        me = os.getpid()
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == me:
                continue
            try:
                exe = os.readlink(f"/proc/{name}/exe")
            except OSError:
                continue
            exe = exe.removesuffix(" (deleted)")
            if exe not in self.seen and not exe.startswith(self.own_dir + "/"):
                self.seen.add(exe)
                self.watcher.mark(exe, Access.EXECUTED | Access.OPENED)


def trace(job: TraceJob, layout: SensorLayout) -> int:
    started = time.monotonic()
    fs = RootFS("/")
    try:
        user = resolve_user(job.user, fs)
    except SlimError as exc:
        return fail(layout, FailureReason.BAD_INPUT, exc.message, exc.hint)
    env = app_environment(job.env, user)
    program = find_program(fs, job.argv[0], env.get("PATH"), job.workdir) if job.argv else None
    if program is None:
        name = job.argv[0] if job.argv else "(empty command)"
        return fail(
            layout, FailureReason.COMMAND_NOT_FOUND, f"command not found in the image: {name}"
        )

    skipped = layout.skipped_trees()
    # every path the trace keeps takes its size in the result from this
    budget = ByteBudget(job.path_bytes)
    # The tracer's launcher starts (and loads its code) before the watches,
    # so its own start-up is not the app's, and before the bundle is sealed.
    tracer, untraced = prepare_tracer(job, budget)
    try:
        watcher = TreeWatcher(skipped, budget, track_changes=job.await_collect)
        watches = watcher.watch_tree("/", progress_sayer(ProgressStep.WATCH))
    except WatchLimitError as exc:
        return fail(layout, FailureReason.WATCH_LIMIT, str(exc), sysctl=exc.sysctl)
    watcher.drain()
    setup_seconds = time.monotonic() - started
    seal(layout)
    watcher.start()
    # Without the syscall layer, execs are sampled from /proc (inotify cannot
    # tell an exec from a read); with it, every exec is seen at the call.
    sampler = ExecSampler(watcher, layout.root) if tracer is None else None
    if sampler is not None:
        sampler.start()
    say(Watching(watches, round(setup_seconds, 3)))

    app_started = time.monotonic()
    if tracer is not None:
        # The tracer thread must get the GIL back at once when a stopped
        # process waits for it, not after the reader thread's 5 ms slice.
        sys.setswitchinterval(TRACER_SWITCH_INTERVAL)
    supervisor, tracer, untraced = start_app(job, program, env, user, tracer, untraced)
    if tracer is None and sampler is None:  # the tracer could not start the app after all
        sampler = ExecSampler(watcher, layout.root)
        sampler.start()
    watcher.mark(fs.resolve(program).path, Access.EXECUTED | Access.OPENED)
    app_exit = supervisor.wait()
    say(AppExited(app_exit.status))
    if sampler is not None:
        sampler.stop()
    end_all_processes()  # nothing the app left behind runs from here on
    lookups = lookups_of(tracer, skipped)
    mark_executed(watcher, fs, lookups)
    stats = watcher.stop()

    files = tuple(
        TracedFile(path, file_kind(path), tuple(TracedAccess(name) for name in access.names()))
        for path, access in sorted(watcher.seen.items())
        if not any(path == t or path.startswith(t + "/") for t in skipped)
    )
    not_intact = intactness(watcher, tracer) if job.await_collect else "not asked"
    write_result(
        layout,
        TraceResult(
            program=program,
            user=AppIdentity(user.uid, user.gid, tuple(user.groups)),
            exit=AppStatus(app_exit.status, app_exit.signal),
            watches=stats.watches,
            events=stats.events,
            overflow=stats.overflow,
            setup_seconds=round(setup_seconds, 3),
            app_seconds=round(time.monotonic() - app_started, 3),
            files=files,
            lookups=lookups,
            syscalls=syscall_report(tracer, untraced),
            files_dropped=watcher.dropped,
            intact=not_intact is None,
            not_intact=not_intact,
        ),
    )
    if job.await_collect and not_intact is None:
        view = PristineView("/", watcher.changes().made, watcher.before, watcher.links)
        return collect_here(layout, view)
    return app_exit.status


def intactness(watcher: TreeWatcher, tracer: SyscallTracer | None) -> str | None:
    """Why this container cannot stand for the image for the collect (None:
    it can); see slimmer.sensor.pristine."""
    changes = watcher.changes()
    records = tracer.log.first if tracer is not None else {}
    return why_not_intact(
        changes,
        pid1=os.getpid() == 1,
        links_made=links_in((os.fsdecode(path), action) for path, action, _ in records),
        # a name not read, or not kept (the budget spent), may be a link's
        unresolved=tracer.log.unresolved + tracer.log.dropped if tracer is not None else 0,
        slim_writes=(WHEEL_INIT_PATH,),
        made_with_links=hard_linked(changes.made),
    )


def collect_here(layout: SensorLayout, fs: PristineView) -> int:
    """After a trace: wait for the host's collect job (its config, then the
    ready marker, in the run dir, which nothing but the host writes now: the
    app's processes are gone and the dir was emptied), and run it on the
    image's view of this container."""
    clear_run_dir(layout, keep=(layout.result_path,))
    say(TraceWritten())
    deadline = time.monotonic() + HANDOVER_TIMEOUT
    while not os.path.lexists(layout.handover_ready):
        if time.monotonic() > deadline:
            return fail(layout, FailureReason.INTERNAL, "no collect job came after the trace")
        time.sleep(HANDOVER_POLL)
    try:
        config = RunConfig.from_json(read_private(layout.handover_config))
    except (OSError, wire.WireError) as exc:
        return fail(layout, FailureReason.INTERNAL, f"cannot read the collect job: {exc}")
    if config.sensor_dir != layout.root or not isinstance(config.job, CollectJob):
        return fail(layout, FailureReason.INTERNAL, "the job after a trace must be a collect job")
    status = collect(config.job, layout, fs)
    # The host reads the result and the tar from this running container, then
    # removes it: no wait for the container to stop first.
    say(CollectWritten())
    time.sleep(HANDOVER_TIMEOUT)
    return status


def prepare_tracer(job: TraceJob, budget: ByteBudget) -> tuple[SyscallTracer | None, str | None]:
    """The syscall tracer, its launcher ready; or None and why not."""
    if not job.syscalls:
        return None, "turned off (--no-syscalls)"
    try:
        tracer = SyscallTracer(PathLog(budget=budget))
        tracer.prepare()
    except TracingUnavailable as exc:
        return None, exc.detail
    return tracer, None


def start_app(
    job: TraceJob,
    program: str,
    env: dict[str, str],
    user: AppUser,
    tracer: SyscallTracer | None,
    untraced: str | None,
) -> tuple[Supervisor, SyscallTracer | None, str | None]:
    """The app, started under the syscall tracer where that works, else
    with inotify alone (the trace says why)."""
    if tracer is not None:
        traced = TracedSupervisor(job.stop_signal, job.stop_timeout, tracer)
        try:
            traced.start(program, list(job.argv), env, job.workdir, user)
        except TracingUnavailable as exc:
            tracer, untraced = None, exc.detail
        else:
            return traced, tracer, None
    if untraced is not None and job.syscalls:
        say(Note(f"syscall tracing is unavailable here ({untraced}); inotify alone"))
    supervisor = Supervisor(job.stop_signal, job.stop_timeout)
    supervisor.start(program, list(job.argv), env, job.workdir, user)
    return supervisor, None, untraced


def lookups_of(tracer: SyscallTracer | None, skipped: tuple[str, ...]) -> tuple[Lookup, ...]:
    if tracer is None:
        return ()
    return tuple(
        Lookup(record.path, record.action, record.follow, record.existed)
        for record in tracer.log.records()
        if record.path.startswith("/")
        and not any(record.path == t or record.path.startswith(t + "/") for t in skipped)
    )


def mark_executed(watcher: TreeWatcher, fs: RootFS, lookups: tuple[Lookup, ...]) -> None:
    """What the syscall layer saw exec'd is `executed` in the file list too
    (by its real path, as the /proc sampler would have named it)."""
    for lookup in lookups:
        if lookup.action is PathAction.EXEC and lookup.existed:
            try:
                watcher.mark(fs.resolve(lookup.path).path, Access.EXECUTED | Access.OPENED)
            except SlimError:
                continue


def syscall_report(tracer: SyscallTracer | None, untraced: str | None) -> SyscallReport:
    if tracer is None:
        return SyscallReport(observed=False, reason=untraced)
    log = tracer.log
    return SyscallReport(
        observed=True,
        dropped=log.dropped,
        unresolved=log.unresolved,
        unobserved_programs=tuple(sorted(os.fsdecode(p) for p in log.unobserved_programs)),
        app_trace_filters=log.trace_filters,
    )


def deps(job: DepsJob, layout: SensorLayout) -> int:
    fs = RootFS("/")
    loader = Loader(
        fs,
        env=job.env,
        cwd=job.workdir,
        use_ld_cache=job.use_ld_cache,
        as_if_ldconfig=job.as_if_ldconfig,
    )
    closure = loader.closure(list(job.paths), runtime_extras=job.runtime_extras, gconv=job.gconv)
    write_result(
        layout,
        DepsResult(
            report=closure_report(closure, "/"),
            not_found=tuple(p for p in job.paths if not fs.exists(p, cwd=job.workdir)),
            tree=closure_tree(closure),
        ),
    )
    return 0


def collect(job: CollectJob, layout: SensorLayout, fs: RootFS | None = None) -> int:
    """Select the micro image's files here, where they are, and tar them
    (slimmer.sensor.collect); `fs`: the image's view of a traced container."""
    result = collect_files(
        job, layout, lambda total: progress_sayer(ProgressStep.COLLECT, total), fs
    )
    if isinstance(result, SensorFailure):
        return fail(layout, result.reason, result.message, result.hint)
    write_result(layout, result)
    return 0


def inventory_packages(job: InventoryJob) -> int | None:
    """How many packages the image's database lists (None: no database)."""
    if not job.count_packages:
        return None
    db = read_package_db(RootFS("/"))
    return len(db) if db.manager is not None else None


def inventory(job: InventoryJob, layout: SensorLayout) -> int:
    """How many entries and bytes the image holds (without the sensor)."""
    counts = {"files": 0, "dirs": 0, "symlinks": 0, "other": 0, "bytes": 0}
    dirs = []
    for path, info in walk(RootFS("/"), skipped=layout.skipped_trees()):
        if stat.S_ISREG(info.st_mode):
            counts["files"] += 1
            counts["bytes"] += info.st_size
        elif stat.S_ISDIR(info.st_mode):
            counts["dirs"] += 1
            dirs.append(path)
        elif stat.S_ISLNK(info.st_mode):
            counts["symlinks"] += 1
        else:
            counts["other"] += 1
    write_result(
        layout,
        InventoryResult(**counts, dir_paths=tuple(sorted(dirs)), packages=inventory_packages(job)),
    )
    return 0


def main(config_path: str) -> int:
    """Run the job of the config at `config_path` (in the run dir of this
    run's sensor directory)."""
    layout = SensorLayout(os.path.dirname(os.path.dirname(config_path)))
    try:
        make_undumpable()  # first: nothing of the image runs yet
    except OSError as exc:
        return fail(layout, FailureReason.INTERNAL, f"the sensor cannot protect itself: {exc}")
    try:
        with open(config_path, encoding="utf-8") as handle:
            config = RunConfig.from_json(handle.read())
        if config.sensor_dir != layout.root:
            raise OSError(f"the config is for {config.sensor_dir}, not {layout.root}")
        if not isinstance(config.job, TraceJob):
            seal(layout)  # trace seals once the tracer's launcher is ready
    except (OSError, wire.WireError) as exc:
        return fail(layout, FailureReason.INTERNAL, f"cannot read the run config: {exc}")
    try:
        job = config.job
        if isinstance(job, TraceJob):
            return trace(job, layout)
        if isinstance(job, DepsJob):
            return deps(job, layout)
        if isinstance(job, CollectJob):
            return collect(job, layout)
        return inventory(job, layout)
    except Exception as exc:  # the host needs a result, not a silent exit
        return fail(layout, FailureReason.INTERNAL, f"sensor failed: {type(exc).__name__}: {exc}")
