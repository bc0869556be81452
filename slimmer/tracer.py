"""`slim trace`: run the app in a container of the fat image under the
sensor, exercise it with probes, stop it, and keep what it touched."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from slimmer.errors import ExitCode, SlimError
from slimmer.probes import (
    EXPECT_HINT,
    AppGone,
    NotReady,
    ProbeRequest,
    plan_probes,
    run_probes,
    unexpected_text,
)
from slimmer.trace import (
    ProbeResult,
    Trace,
    TraceStatus,
    command_line,
)
from slimmer.userspec import UserSpecError, parse_user_spec

if TYPE_CHECKING:
    from slimmer.engine import Engine
    from slimmer.runner import SensorContainer

log = logging.getLogger(__name__)

IDLE_TRACE_SECONDS = 2.0  # a run with nothing to probe and no --duration
WATCH_SETUP_TIMEOUT = 120.0


class AppFailed(SlimError):
    """The traced app exited when it should have served, or failed, or a
    probe did not get the answer it expects: the trace did not exercise the
    app as asked, and nothing built from it could be trusted."""

    exit_code = ExitCode.APP

    def __init__(
        self, message: str, hint: str | None, trace: Trace | None, show_app_output: bool = True
    ) -> None:
        super().__init__(message, hint)
        self.trace = trace
        self.show_app_output = show_app_output


def probes_failed(unexpected: list[ProbeResult], image: str) -> AppFailed:
    """The error for probes whose answers are not what they expect."""
    return AppFailed(unexpected_text(unexpected, image), EXPECT_HINT, None, show_app_output=False)


def job_failed(program: str, status: int | None, expected: int) -> AppFailed:
    return AppFailed(
        f"{program} exited with status {status} (expected {expected})",
        "its last output is below; if that status is what the job should end with, "
        f"give --expect-exit {status}",
        None,
    )


@dataclass(frozen=True, kw_only=True)
class TraceOptions:
    """How to run and exercise the app while it is traced."""

    cmd: list[str] | None = None  # replaces the image's CMD
    entrypoint: list[str] | None = None
    user: str | None = None
    probes: ProbeRequest = field(default_factory=ProbeRequest)
    duration: float = 0.0  # extra seconds of traced run after the probes
    until_exit: bool = False
    expect_exit: int = 0  # with until_exit: the status the job must end with
    exit_timeout: float | None = None
    stop_timeout: float = 10.0
    stop_signal: int | None = None  # default: the image's STOPSIGNAL
    echo_app: bool = True
    syscalls: bool = True  # observe lookups at the system call where that works


def trace_image(engine: Engine, image: str, options: TraceOptions, cache_dir: Path) -> Trace:
    """Trace one run of the image. Raises AppFailed (with the trace, when
    one was written) if the app did not behave."""
    with tracing(engine, image, options, cache_dir) as run:
        return run.trace


@dataclass(frozen=True)
class TracedRun:
    """A trace, and with await_collect the container it ran in when that can
    stand for the image: its sensor awaits the collect job (SensorContainer.
    hand_over), until the `tracing` block ends."""

    trace: Trace
    collector: SensorContainer | None
    not_intact: str | None  # why there is no collector (None when there is)


@contextmanager
def tracing(
    engine: Engine,
    image: str,
    options: TraceOptions,
    cache_dir: Path,
    *,
    await_collect: bool = False,
) -> Iterator[TracedRun]:
    """Trace one run of the image, as trace_image; with `await_collect` (slim
    build) the container stays, its sensor waiting for a collect job, when
    the app changed nothing the image had (slimmer.sensor.pristine)."""
    # The sensor's side loads now: `slim build` says its first line before.
    from slimmer.bundle import sensor_bundle
    from slimmer.protocol import TraceJob, TraceResult
    from slimmer.runner import SensorError, sensor_container

    attrs = engine.image_attrs(image)
    config = engine.image_config(image, attrs)
    argv = command_line(config, options.cmd, options.entrypoint)
    if not argv:
        raise SlimError(
            f"image {image!r} has no ENTRYPOINT or CMD",
            "give the command after --, e.g. slim trace IMAGE -- /usr/bin/app",
        )
    stop_signal = options.stop_signal or config.stop_signal_number()
    user = options.user if options.user is not None else config.user
    try:
        parse_user_spec(user)  # before any container: the sensor could not switch to it
    except UserSpecError as exc:
        raise SlimError(
            f"cannot run the app as {user!r}: {exc}", "give another one with --user USER[:GROUP]"
        ) from None
    job = TraceJob(
        argv=tuple(argv),
        env=config.env_dict(),
        workdir=config.workdir or "/",
        user=user,
        stop_signal=stop_signal,
        stop_timeout=options.stop_timeout,
        syscalls=options.syscalls,
        await_collect=await_collect,
    )
    request = options.probes
    if options.until_exit:
        request = ProbeRequest(healthcheck=False, default_get=False)
    plan = plan_probes(request, config, user, client_image=image)
    bundle = sensor_bundle(cache_dir)
    seconds: dict[str, float] = {}
    probes: tuple[ProbeResult, ...] = ()
    problems: list[str] = []
    failure: AppFailed | None = None
    stopped = False  # a batch job stopped at --exit-timeout
    started = time.monotonic()

    with sensor_container(
        engine,
        image,
        bundle,
        job,
        engine.new_run_id(),
        ports=plan.ports(),
        workdir=job.workdir,
        echo_app=options.echo_app,
    ) as sensor:
        if not sensor.wait_watching(WATCH_SETUP_TIMEOUT):
            engine.wait(sensor.container, 10)
            sensor.result_of(TraceResult)  # raises the failure the sensor reported
            raise SensorError("the sensor did not start watching")
        seconds["setup"] = round(time.monotonic() - started, 3)

        if options.until_exit:
            log.info("waiting for %s to exit", argv[0])
            if not sensor.wait_finished(options.exit_timeout):
                log.warning("no exit after %.0fs; stopping it", options.exit_timeout or 0)
                problems.append(f"the job was stopped after --exit-timeout {options.exit_timeout}s")
                stopped = True
                sensor.stop(options.stop_timeout)
        else:
            try:
                run = run_probes(
                    engine, sensor.container, plan, still_running=sensor.running, must_answer=True
                )
                probes = run.results
                if run.ready_seconds is not None:
                    seconds["ready"] = round(run.ready_seconds, 3)
                unexpected = run.unexpected()
                if unexpected:
                    failure = probes_failed(unexpected, image)
                elif options.duration:
                    time.sleep(options.duration)
                elif not plan.exercises():
                    log.info("no probes: tracing %.0fs of the app's run", IDLE_TRACE_SECONDS)
                    time.sleep(IDLE_TRACE_SECONDS)
            except AppGone as exc:
                failure = AppFailed(
                    f"{argv[0]} exited at start, {exc.message}",
                    "its last output is above; the trace was saved",
                    None,
                )
            except NotReady as exc:
                failure = AppFailed(exc.message, exc.hint, None)
            seconds["probes"] = round(time.monotonic() - started - seconds["setup"], 3)
            if sensor.running():
                sensor.stop(options.stop_timeout)
            else:
                engine.wait(sensor.container, 10)

        result = sensor.result_of(TraceResult)
        tail = sensor.app_output_tail()

        if result.overflow:
            problems.append("the inotify queue overflowed: some accesses were not recorded")
        budget = f"the trace's paths reached their limit ({job.path_bytes // 2**20} MiB)"
        if result.syscalls.dropped:
            problems.append(f"{budget}: {result.syscalls.dropped} lookups were not recorded")
        if result.files_dropped:
            problems.append(f"{budget}: {result.files_dropped} files were not recorded")
        status = TraceStatus.COMPLETE
        if problems:
            status = TraceStatus.PARTIAL
        finished = options.until_exit and not stopped
        if failure is None and finished and result.exit.status != options.expect_exit:
            failure = job_failed(argv[0], result.exit.status, options.expect_exit)
        if failure is not None:
            status = TraceStatus.FAILED
            problems.insert(0, failure.message)
        trace = Trace(
            image=image,
            image_id=str(attrs.get("Id", "")),
            config=config,
            command=tuple(argv),
            user=user,
            files=result.files,
            lookups=result.lookups,
            syscalls=result.syscalls,
            probes=probes,
            exit_status=result.exit.status,
            exit_signal=result.exit.signal,
            status=status,
            problems=tuple(problems),
            until_exit=options.until_exit,
            expect_exit=options.expect_exit,
            watches=result.watches,
            events=result.events,
            seconds={
                **seconds,
                "watch": result.setup_seconds,
                "app": result.app_seconds,
                "total": round(time.monotonic() - started, 3),
            },
        )
        if failure is not None:
            failure.trace = trace
            if tail and failure.show_app_output:
                failure.message += f"\n--- last output of the app ---\n{tail}"
            raise failure
        for problem in trace.problems:
            log.warning("the trace is %s: %s (build needs --force)", trace.status.value, problem)
        if result.syscalls.app_trace_filters:
            log.warning(
                "the app installed %d seccomp filter(s) that send calls to a tracer of its own "
                "(SECCOMP_RET_TRACE): under slim's syscall layer that tracer does not hear of "
                "the path calls slim holds, so the app may behave otherwise than untraced; "
                "trace it with --no-syscalls",
                result.syscalls.app_trace_filters,
            )
        if options.syscalls and not result.syscalls.observed:
            log.warning(
                "syscall tracing was not possible here (%s): paths the app only looked up "
                "(stat, access, a failed open) are not seen; inotify alone",
                result.syscalls.reason,
            )
        awaiting = await_collect and result.intact and sensor.trace_written.is_set()
        yield TracedRun(trace, sensor if awaiting else None, result.not_intact)
