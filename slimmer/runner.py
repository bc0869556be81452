"""Runs the sensor in a container of an image: the host half of every mode.

The container is created (not started) with the sensor as its entrypoint
and user 0, the engine's copy of the bundle mounted read-only
(slimmer.sensorcache; where the engine keeps none, the bundle is copied in
with the Engine API), the run's config copied in, then it starts. Nothing
of this machine is mounted and nothing needs privileges, so remote engines
work too. The container is labelled and always removed. What comes back
(the result file, progress lines) is validated through the typed protocol
before anything uses it.
"""

from __future__ import annotations

import collections
import io
import logging
import platform
import tarfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

from slimmer import progress, wire
from slimmer.bundle import Bundle
from slimmer.engine import FileTooLarge
from slimmer.engineinfo import VolumeMount, basename
from slimmer.errors import CommandNotRunnable, ExitCode, NotFound, SlimError
from slimmer.protocol import (
    MAX_RESULT_BYTES,
    SENSOR_ENV,
    STOP_REQUEST_SIGNAL,
    AppExited,
    CollectJob,
    CollectWritten,
    FailureReason,
    Job,
    Note,
    Progress,
    ProgressStep,
    RunConfig,
    SensorFailure,
    SensorLayout,
    SensorResult,
    TraceWritten,
    Watching,
    decode_result,
    parse_message_line,
)
from slimmer.sensorcache import forget, put_bundle, sensor_volume

if TYPE_CHECKING:
    from slimmer.engine import ContainerRef, Engine

log = logging.getLogger(__name__)

TAIL_LINES = 40
PROGRESS_STEPS = {ProgressStep.WATCH: progress.WATCH, ProgressStep.COLLECT: progress.COLLECT}
R = TypeVar("R", bound=SensorResult)


class SensorError(SlimError):
    """The sensor could not do its job in the container."""


def failure_error(failure: SensorFailure) -> SlimError:
    """The error a user sees for a failure the sensor reported."""
    if failure.reason is FailureReason.COMMAND_NOT_FOUND:
        return NotFound(
            failure.message, "give the command's path in the image after --, or fix ENTRYPOINT/CMD"
        )
    if failure.reason is FailureReason.BAD_INPUT:
        return NotFound(failure.message, failure.hint)
    if failure.reason is FailureReason.WATCH_LIMIT:
        sysctl = failure.sysctl or "fs.inotify.max_user_watches"
        error = SensorError(failure.message, f"raise it on the host: sysctl -w {sysctl}=1048576")
        error.exit_code = ExitCode.RESOURCE
        return error
    return SensorError(failure.message, "run with --debug for the container's output")


def run_dir_tar(
    layout: SensorLayout,
    config: RunConfig,
    run_files: Mapping[str, bytes] | None = None,
    *,
    bundle_dir: bool = False,
) -> bytes:
    """A tar, to unpack at /, that makes the run's fresh sensor directory
    (root's only), its run dir and the config in it, and `run_files` (name
    in the run dir -> bytes: the job's inputs); with `bundle_dir`, the
    directory the bundle is copied into (a mounted one is the engine's)."""
    files = {layout.config_path: config.to_json().encode()}
    for name, content in (run_files or {}).items():
        if "/" in name or name in ("", ".", "..") or f"{layout.run_dir}/{name}" in files:
            raise ValueError(f"{name!r} is not a file name for the run dir")
        files[f"{layout.run_dir}/{name}"] = content
    dirs = (layout.root, layout.run_dir, *((layout.bundle_dir,) if bundle_dir else ()))
    return files_tar(files, dirs)


def files_tar(files: Mapping[str, bytes], dirs: tuple[str, ...] = ()) -> bytes:
    """A tar of directories (root's only) and then files (0600), by path."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for directory in dirs:
            member = tarfile.TarInfo(directory.lstrip("/"))
            member.type, member.mode = tarfile.DIRTYPE, 0o700
            tar.addfile(member)
        for path, data in files.items():
            member = tarfile.TarInfo(path.lstrip("/"))
            member.size, member.mode = len(data), 0o600
            tar.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


class SensorContainer:
    """A started container running the sensor; follows its output."""

    def __init__(
        self, engine: Engine, container: ContainerRef, layout: SensorLayout, echo_app: bool
    ) -> None:
        self.engine = engine
        self.container = container
        self.layout = layout
        self.echo_app = echo_app
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.notes: list[str] = []
        self.watching = threading.Event()
        self.trace_written = threading.Event()  # the sensor awaits a collect job
        self.ended = threading.Event()
        # The sensor's result is written: it awaits a job or removal, or the container ended.
        self.finished = threading.Event()
        self._steps: set[progress.Step] = set()  # steps whose progress the sensor showed
        self._thread = threading.Thread(target=self._follow, name="container-logs", daemon=True)

    def start(self) -> None:
        self.engine.start(self.container)
        self._thread.start()

    def _follow(self) -> None:
        pending = b""
        try:
            for chunk in self.engine.stream_logs(self.container):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    self._line(raw.decode("utf-8", "replace"))
            if pending:
                self._line(pending.decode("utf-8", "replace"))
        finally:
            for step in self._steps:
                progress.finish(step)
            self.ended.set()
            self.finished.set()

    def _line(self, line: str) -> None:
        message = parse_message_line(line)
        if isinstance(message, Progress):
            step = PROGRESS_STEPS[message.step]
            self._steps.add(step)
            progress.update(step, message.done, message.total)
            return
        if isinstance(message, Watching):
            progress.finish(progress.WATCH)
            self.watching.set()
            log.info("watching %d directories (%.2fs)", message.directories, message.seconds)
            return
        if isinstance(message, TraceWritten):
            self.trace_written.set()
            self.finished.set()
            return
        if isinstance(message, CollectWritten):
            self.finished.set()
            return
        if isinstance(message, AppExited):
            log.debug("sensor: the app exited with %d", message.status)
            return
        if isinstance(message, Note):
            self.notes.append(message.text)
            log.debug("sensor: %s", message.text)
            return
        self.tail.append(line)
        if self.echo_app:
            log.info("app| %s", line)

    def running(self) -> bool:
        return not self.ended.is_set() and self.engine.is_running(self.container)

    def wait_watching(self, timeout: float) -> bool:
        """Wait for the sensor's watches (the app starts right after);
        False if the sensor ended or did not get there in time."""
        deadline = time.monotonic() + timeout
        while not self.watching.wait(0.1):
            if self.ended.is_set() or time.monotonic() > deadline:
                return False
        return True

    def stop(self, timeout: float) -> None:
        """Ask the sensor to stop the app (with the app's stop signal, then
        SIGKILL after `timeout`); the result is written either way, and the
        container ends (or awaits its collect job)."""
        self.engine.kill(self.container, STOP_REQUEST_SIGNAL)
        if not self.wait_finished(timeout + 15):
            self.engine.kill(self.container, 9)
            raise SensorError("the container did not stop; the trace is lost")

    def wait_finished(self, timeout: float | None) -> bool:
        """Wait until the sensor's result is written (the container ended, or
        awaits its collect job); False after `timeout` seconds. The engine is
        asked too, once a second: its log stream may end late."""
        deadline = time.monotonic() + timeout if timeout is not None else None
        while True:
            left = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if self.finished.wait(max(left, 0.0)) or not self.engine.is_running(self.container):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def wait_exit(self, timeout: float | None) -> int | None:
        return self.engine.wait(self.container, timeout if timeout is not None else 10**9)

    def hand_over(self, job: CollectJob, run_files: Mapping[str, bytes]) -> None:
        """Give a sensor that awaits it (trace_written) the collect job to
        run in this container: the config and the job's files in its run
        dir, the ready marker last."""
        config = RunConfig(sensor_dir=self.layout.root, job=job)
        files = {basename(self.layout.handover_config): config.to_json().encode()}
        files.update(run_files)
        files[basename(self.layout.handover_ready)] = b""
        self.finished.clear()  # until the collect's result is written (CollectWritten)
        self.engine.put_archive(self.container, files_tar(files), self.layout.run_dir)

    def result(self) -> SensorResult:
        """The sensor's result, validated; a SensorError when there is none."""
        awaiting = self.trace_written.is_set() and not self.ended.is_set()
        if not awaiting:  # let the log follower take the last lines (notes) first
            self.ended.wait(5)
        try:
            data = self.engine.get_file(self.container, self.layout.result_path, MAX_RESULT_BYTES)
        except FileTooLarge as exc:
            raise SensorError(
                f"the sensor's result is {exc.size / 2**20:.0f} MiB, more than slim reads "
                f"({exc.limit / 2**20:.0f} MiB)",
                "run with --debug for the container's output",
            ) from None
        if data is None:
            last = self.notes[-1] if self.notes else "no message"
            raise SensorError(
                f"the sensor wrote no result ({last})",
                "run with --debug for the container's output",
            )
        try:
            return decode_result(data)
        except wire.WireError as exc:
            raise SensorError(f"the sensor's result is not valid: {exc.message}") from None

    def result_of(self, kind: type[R]) -> R:
        """The result, which must be of this kind; a reported failure raises
        the error it stands for."""
        result = self.result()
        if isinstance(result, SensorFailure):
            raise failure_error(result)
        if not isinstance(result, kind):
            raise SensorError(
                f"the sensor answered a {type(result).__name__}, not a {kind.__name__}"
            )
        return result

    def app_output_tail(self, lines: int = 15) -> str:
        return "\n".join(list(self.tail)[-lines:])


@contextmanager
def sensor_container(
    engine: Engine,
    image: str,
    bundle: Bundle,
    job: Job,
    run_id: str,
    *,
    ports: list[int] | tuple[int, ...] = (),
    workdir: str | None = None,
    echo_app: bool = False,
    run_files: Mapping[str, bytes] | None = None,
) -> Iterator[SensorContainer]:
    """A started sensor container; removed on exit, also on Ctrl-C. The
    sensor goes into a directory of its own, new for each run, so nothing
    the image ships can stand in for it. `run_files` go into its run dir.

    The bundle is the engine's kept copy, mounted read-only; when that
    cannot start (the volume went away meanwhile), the container is made
    again with the bundle copied in."""
    layout = SensorLayout.new()
    config = RunConfig(sensor_dir=layout.root, job=job)
    volume = sensor_volume(engine, image, bundle)
    while True:
        mounts = (VolumeMount(volume, layout.bundle_dir),) if volume else ()
        with engine.container(
            image,
            run_id,
            entrypoint=layout.command(),
            command=[],
            user="0",
            working_dir=workdir,
            ports=ports,
            environment=SENSOR_ENV,
            volumes=mounts,
        ) as container:
            engine.put_archive(
                container, run_dir_tar(layout, config, run_files, bundle_dir=volume is None)
            )
            if volume is None:
                put_bundle(engine, container, bundle, layout.bundle_dir)
            sensor = SensorContainer(engine, container, layout, echo_app)
            try:
                sensor.start()
            except CommandNotRunnable as exc:
                if volume is None:
                    raise SensorError(
                        f"slim's sensor cannot run in a container of {image}: {exc.message}",
                        f"the sensor is this machine's CPython ({platform.machine()}); the "
                        f"engine runs {engine.platform} containers: use an engine with this "
                        "machine's CPU",
                    ) from None
                log.debug("the sensor in %s did not start (%s); copying it", volume, exc)
            else:
                yield sensor
                return
        forget(engine, bundle, volume)  # now that no container uses it
        volume = None


def run_sensor_once(
    engine: Engine,
    image: str,
    bundle: Bundle,
    job: Job,
    kind: type[R],
    timeout: float = 300,
) -> R:
    """Run the sensor on a job that ends by itself (deps, collect's peers,
    inventory) in a container of the image, and return its result."""
    with sensor_container(engine, image, bundle, job, engine.new_run_id()) as sensor:
        status = sensor.wait_exit(timeout)
        if status is None:
            raise SensorError(f"the sensor did not finish within {timeout:.0f}s in {image}")
        return sensor.result_of(kind)
