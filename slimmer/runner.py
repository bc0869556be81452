"""Runs the sensor in a container of an image: the host half of every mode.

The container is created (not started) with the sensor as its entrypoint
and user 0, the bundle and the run's config are copied in with the Engine
API, then it starts. Nothing is mounted and nothing needs privileges, so
remote engines work too. The container is labelled and always removed.
"""

from __future__ import annotations

import collections
import io
import json
import logging
import tarfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from slimmer.engine import Container, Engine, new_run_id
from slimmer.errors import SlimError
from slimmer.sensor.protocol import (
    CONFIG_PATH,
    MESSAGE_PREFIX,
    READY_MESSAGE,
    RESULT_PATH,
    RunConfig,
    sensor_command,
)

log = logging.getLogger(__name__)

MAX_RESULT_BYTES = 512 * 1024 * 1024
TAIL_LINES = 40


class SensorError(SlimError):
    """The sensor could not do its job in the container."""


def config_tar(config: RunConfig) -> bytes:
    data = config.to_json().encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        member = tarfile.TarInfo(CONFIG_PATH.lstrip("/"))
        member.size, member.mode = len(data), 0o644
        tar.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


class SensorContainer:
    """A started container running the sensor; follows its output."""

    def __init__(self, engine: Engine, container: Container, echo_app: bool) -> None:
        self.engine = engine
        self.container = container
        self.echo_app = echo_app
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.sensor_lines: list[str] = []
        self.watching = threading.Event()
        self.ended = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="container-logs", daemon=True)

    def start(self) -> None:
        self.container.start()
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
            self.ended.set()

    def _line(self, line: str) -> None:
        if line.startswith(MESSAGE_PREFIX):
            message = line[len(MESSAGE_PREFIX) :]
            self.sensor_lines.append(message)
            if message.startswith(READY_MESSAGE):
                self.watching.set()
                log.info("%s", message)
            elif message.startswith("error:"):
                log.debug("sensor: %s", message)
            return
        self.tail.append(line)
        if self.echo_app:
            log.info("app| %s", line)

    def running(self) -> bool:
        return not self.ended.is_set() and self.engine.is_running(self.container)

    def wait_watching(self, timeout: float) -> None:
        """Wait for the sensor's watches (the app starts right after)."""
        deadline = time.monotonic() + timeout
        while not self.watching.wait(0.1):
            if self.ended.is_set() or time.monotonic() > deadline:
                status = self.engine.wait(self.container, 5)
                raise SensorError(
                    f"the sensor did not start watching ({self.last_error() or f'exit {status}'})",
                    "run with --debug for the container's output",
                )

    def last_error(self) -> str | None:
        errors = [m[len("error: ") :] for m in self.sensor_lines if m.startswith("error:")]
        return errors[-1] if errors else None

    def stop(self, signal_number: int, timeout: float) -> int:
        """Ask the app to stop; the sensor kills it after its own stop
        timeout, so the trace is written either way. Returns the status."""
        self.engine.kill(self.container, signal_number)
        status = self.engine.wait(self.container, timeout + 15)
        if status is None:
            self.engine.kill(self.container, 9)
            raise SensorError("the container did not stop; the trace is lost")
        return status

    def wait_exit(self, timeout: float | None) -> int | None:
        return self.engine.wait(self.container, timeout if timeout is not None else 10**9)

    def result(self) -> dict[str, Any]:
        self.ended.wait(5)
        data = self.engine.get_file(self.container, RESULT_PATH, MAX_RESULT_BYTES)
        if data is None:
            raise SensorError(
                f"the sensor wrote no result ({self.last_error() or 'no message'})",
                "run with --debug for the container's output",
            )
        return json.loads(data)

    def app_output_tail(self, lines: int = 15) -> str:
        return "\n".join(list(self.tail)[-lines:])


@contextmanager
def sensor_container(
    engine: Engine,
    image: str,
    bundle: Path,
    config: RunConfig,
    run_id: str,
    *,
    ports: list[int] = (),  # type: ignore[assignment]
    echo_app: bool = False,
) -> Iterator[SensorContainer]:
    """A started sensor container; removed on exit, also on Ctrl-C."""
    options: dict[str, Any] = {
        "entrypoint": sensor_command(),
        "command": [],
        "user": "0",
        "ports": engine.publish(list(ports)),
        "detach": True,
    }
    if config.workdir:
        options["working_dir"] = config.workdir
    with engine.container(image, run_id, **options) as container:
        with bundle.open("rb") as handle:
            engine.put_archive(container, handle)
        engine.put_archive(container, config_tar(config))
        sensor = SensorContainer(engine, container, echo_app)
        sensor.start()
        yield sensor


def run_sensor_once(
    engine: Engine, image: str, bundle: Path, config: RunConfig, timeout: float = 300
) -> dict[str, Any]:
    """Run the sensor in a mode that ends by itself (deps, inventory) in a
    container of the image, and return its result."""
    with sensor_container(engine, image, bundle, config, new_run_id()) as sensor:
        status = sensor.wait_exit(timeout)
        if status != 0:
            raise SensorError(
                f"the sensor failed in {image} ({sensor.last_error() or f'exit {status}'})",
                "run with --debug for the container's output",
            )
        return sensor.result()
