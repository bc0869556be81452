"""Runs the sensor in a container of an image: the host half of every mode.

The container is created (not started) with the sensor as its entrypoint
and user 0, the bundle and the run's config are copied in with the Engine
API, then it starts. Nothing is mounted and nothing needs privileges, so
remote engines work too. The container is labelled and always removed.
What comes back (the result file, progress lines) is validated through the
typed protocol before anything uses it.
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
from pathlib import Path
from typing import TypeVar

from slimmer import progress, wire
from slimmer.engine import ContainerRef, Engine, FileTooLarge
from slimmer.errors import CommandNotRunnable, ExitCode, NotFound, SlimError
from slimmer.protocol import (
    MAX_RESULT_BYTES,
    SENSOR_ENV,
    STOP_REQUEST_SIGNAL,
    AppExited,
    FailureReason,
    Job,
    Note,
    Progress,
    ProgressStep,
    RunConfig,
    SensorFailure,
    SensorLayout,
    SensorResult,
    Watching,
    decode_result,
    parse_message_line,
)

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
    layout: SensorLayout, config: RunConfig, run_files: Mapping[str, bytes] | None = None
) -> bytes:
    """A tar, to unpack at /, that makes the run's fresh sensor directory
    (root's only), its run dir and the config in it, and `run_files` (name
    in the run dir -> bytes: the job's inputs)."""
    files = {layout.config_path: config.to_json().encode()}
    for name, content in (run_files or {}).items():
        if "/" in name or name in ("", ".", "..") or f"{layout.run_dir}/{name}" in files:
            raise ValueError(f"{name!r} is not a file name for the run dir")
        files[f"{layout.run_dir}/{name}"] = content
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for directory in (layout.root, layout.run_dir):
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
        self.ended = threading.Event()
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

    def stop(self, timeout: float) -> int:
        """Ask the sensor to stop the app (with the app's stop signal, then
        SIGKILL after `timeout`); the result is written either way. Returns
        the container's status."""
        self.engine.kill(self.container, STOP_REQUEST_SIGNAL)
        status = self.engine.wait(self.container, timeout + 15)
        if status is None:
            self.engine.kill(self.container, 9)
            raise SensorError("the container did not stop; the trace is lost")
        return status

    def wait_exit(self, timeout: float | None) -> int | None:
        return self.engine.wait(self.container, timeout if timeout is not None else 10**9)

    def result(self) -> SensorResult:
        """The sensor's result, validated; a SensorError when there is none."""
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
    bundle: Path,
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
    the image ships can stand in for it. `run_files` go into its run dir."""
    layout = SensorLayout.new()
    with engine.container(
        image,
        run_id,
        entrypoint=layout.command(),
        command=[],
        user="0",
        working_dir=workdir,
        ports=ports,
        environment=SENSOR_ENV,
    ) as container:
        engine.put_archive(
            container, run_dir_tar(layout, RunConfig(sensor_dir=layout.root, job=job), run_files)
        )
        with bundle.open("rb") as handle:
            engine.put_archive(container, handle, layout.root)
        sensor = SensorContainer(engine, container, layout, echo_app)
        try:
            sensor.start()
        except CommandNotRunnable as exc:
            raise SensorError(
                f"slim's sensor cannot run in a container of {image}: {exc.message}",
                f"the sensor is this machine's CPython ({platform.machine()}); the engine "
                f"runs {engine.platform} containers: use an engine with this machine's CPU",
            ) from None
        yield sensor


def run_sensor_once(
    engine: Engine,
    image: str,
    bundle: Path,
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
