"""What the host and the sensor say to each other: the run configuration the
host puts into the container, and the fixed paths and messages of a run.

Paths are str with surrogateescape; JSON keeps them as \\udcXX escapes, which
round-trip exactly."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

SENSOR_DIR = "/.slim"
RUN_DIR = f"{SENSOR_DIR}/run"
CONFIG_PATH = f"{RUN_DIR}/config.json"
RESULT_PATH = f"{RUN_DIR}/result.json"
OUTPUT_TAR = f"{RUN_DIR}/out.tar"
SENSOR_SCRIPT = f"{SENSOR_DIR}/sensor.py"
SENSOR_PYTHON = f"{SENSOR_DIR}/bin/python3"
SENSOR_LIBDIR = f"{SENSOR_DIR}/lib"
SENSOR_LOADER = f"{SENSOR_LIBDIR}/ld.so"

# The sensor's own lines on stderr start with this; everything else is the app's.
MESSAGE_PREFIX = "slim-sensor: "
READY_MESSAGE = "watching"  # the app is about to start
APP_EXITED = "app-exited"

# Exit statuses of the sensor itself (the app's own status otherwise).
EXIT_COMMAND_NOT_FOUND = 127
EXIT_SENSOR_ERROR = 125
EXIT_WATCH_LIMIT = 124

SKIPPED_TREES = ("/proc", "/sys", "/dev", SENSOR_DIR)


class Mode(Enum):
    TRACE = "trace"  # watch the whole tree, run the app
    DEPS = "deps"  # print the ELF closure of some paths
    COLLECT = "collect"  # tar selected files for a build
    INVENTORY = "inventory"  # count the image's files and bytes


@dataclass(frozen=True)
class RunConfig:
    """One sensor run. `env` is the image's configured environment."""

    mode: str
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    user: str = ""
    stop_signal: int = 15
    stop_timeout: float = 10.0
    paths: list[str] = field(default_factory=list)  # deps
    runtime_extras: bool = False
    gconv: bool = False
    use_ld_cache: bool = True
    as_if_ldconfig: bool = False
    selection: dict[str, Any] = field(default_factory=dict)  # collect: a SelectionRequest

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        return cls(**json.loads(text))


def sensor_command() -> list[str]:
    """How the container starts the sensor: through the bundled loader, so
    nothing of the image (not even a libc) is needed."""
    return [
        SENSOR_LOADER,
        "--library-path",
        SENSOR_LIBDIR,
        SENSOR_PYTHON,
        "-I",
        "-S",
        "-B",
        SENSOR_SCRIPT,
        CONFIG_PATH,
    ]
