"""What the host and the sensor say to each other, shared by both sides.

The host puts a `RunConfig` into the container (one job: trace, deps,
collect or inventory); the sensor answers with one result file holding the
job's typed result or a `SensorFailure`, and with progress lines on stderr
(`slim-sensor: {json}`). Every message is a frozen dataclass read through
`slimmer.wire`, which rejects unknown keys and wrong types: what comes out
of a container is untrusted, and a renamed key fails loudly.

Paths are str with surrogateescape; JSON keeps them as \\udcXX escapes,
which round-trip exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar, Literal

from slimmer import wire
from slimmer.depsreport import DepsReport
from slimmer.fileset import KERNEL_TREES, Selection, SelectionRequest
from slimmer.trace import TracedFile

SENSOR_SCHEMA = "slim.sensor/1"

SENSOR_DIR = "/.slim"
RUN_DIR = f"{SENSOR_DIR}/run"
CONFIG_PATH = f"{RUN_DIR}/config.json"
RESULT_PATH = f"{RUN_DIR}/result.json"
OUTPUT_TAR = f"{RUN_DIR}/out.tar"
SENSOR_SCRIPT = f"{SENSOR_DIR}/sensor.py"
SENSOR_PYTHON = f"{SENSOR_DIR}/bin/python3"
SENSOR_LIBDIR = f"{SENSOR_DIR}/lib"
SENSOR_LOADER = f"{SENSOR_LIBDIR}/ld.so"

# Trees the sensor never watches or collects: the kernel's and its own.
SKIPPED_TREES = (*KERNEL_TREES, SENSOR_DIR)

# The sensor's own lines on stderr start with this; everything else is the app's.
MESSAGE_PREFIX = "slim-sensor: "

# Exit statuses of the sensor itself (the app's own status otherwise).
EXIT_SENSOR_FAILED = 125

MAX_RESULT_BYTES = 512 * 1024 * 1024


class Mode(StrEnum):
    TRACE = "trace"  # watch the whole tree, run the app
    DEPS = "deps"  # the ELF closure of some paths
    COLLECT = "collect"  # tar selected files for a build
    INVENTORY = "inventory"  # count the image's files and bytes


# -- jobs: host -> sensor ------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TraceJob:
    """Run the app under the sensor. `env` is the image's configured ENV."""

    KIND: ClassVar[str] = Mode.TRACE.value
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    user: str = ""
    stop_signal: int = 15
    stop_timeout: float = 10.0


@dataclass(frozen=True, kw_only=True)
class DepsJob:
    KIND: ClassVar[str] = Mode.DEPS.value
    paths: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    runtime_extras: bool = False
    gconv: bool = False
    use_ld_cache: bool = True
    as_if_ldconfig: bool = False


@dataclass(frozen=True, kw_only=True)
class CollectJob:
    KIND: ClassVar[str] = Mode.COLLECT.value
    selection: SelectionRequest


@dataclass(frozen=True)
class InventoryJob:
    KIND: ClassVar[str] = Mode.INVENTORY.value


Job = TraceJob | DepsJob | CollectJob | InventoryJob


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    schema: Literal["slim.sensor/1"] = SENSOR_SCHEMA
    job: Job

    @property
    def mode(self) -> Mode:
        return Mode(type(self.job).KIND)

    def to_json(self) -> str:
        return wire.dumps(self)

    @classmethod
    def from_json(cls, text: str | bytes) -> RunConfig:
        return wire.loads(cls, text)


# -- results: sensor -> host ---------------------------------------------------


@dataclass(frozen=True)
class AppIdentity:
    uid: int
    gid: int
    groups: tuple[int, ...]


@dataclass(frozen=True)
class AppStatus:
    status: int  # as a shell reports it: the exit code, or 128+N
    signal: int | None


@dataclass(frozen=True, kw_only=True)
class TraceResult:
    KIND: ClassVar[str] = Mode.TRACE.value
    program: str
    user: AppIdentity
    exit: AppStatus
    watches: int
    events: int
    overflow: bool
    setup_seconds: float
    app_seconds: float
    files: tuple[TracedFile, ...]


@dataclass(frozen=True, kw_only=True)
class DepsResult:
    KIND: ClassVar[str] = Mode.DEPS.value
    report: DepsReport
    not_found: tuple[str, ...]
    tree: tuple[str, ...]


@dataclass(frozen=True)
class CollectResult:
    KIND: ClassVar[str] = Mode.COLLECT.value
    selection: Selection


@dataclass(frozen=True, kw_only=True)
class InventoryResult:
    KIND: ClassVar[str] = Mode.INVENTORY.value
    files: int
    dirs: int
    symlinks: int
    other: int
    bytes: int
    dir_paths: tuple[str, ...]


class FailureReason(StrEnum):
    COMMAND_NOT_FOUND = "command-not-found"
    BAD_INPUT = "bad-input"  # a user, a path: something the user can fix
    WATCH_LIMIT = "watch-limit"
    INTERNAL = "internal"


@dataclass(frozen=True)
class SensorFailure:
    KIND: ClassVar[str] = "failure"
    reason: FailureReason
    message: str
    hint: str | None = None
    sysctl: str | None = None  # the host limit to raise (watch-limit)


SensorResult = TraceResult | DepsResult | CollectResult | InventoryResult | SensorFailure


@dataclass(frozen=True, kw_only=True)
class ResultFile:
    schema: Literal["slim.sensor/1"] = SENSOR_SCHEMA
    result: SensorResult


def encode_result(result: SensorResult) -> str:
    return wire.dumps(ResultFile(result=result), indent=None)


def decode_result(data: bytes) -> SensorResult:
    """The sensor's result file, validated; WireError if it is not one."""
    return wire.loads(ResultFile, data, wire.Limits(max_bytes=MAX_RESULT_BYTES)).result


# -- progress lines on stderr --------------------------------------------------


@dataclass(frozen=True)
class Watching:
    """Every directory is watched; the app starts right after."""

    KIND: ClassVar[str] = "watching"
    directories: int
    seconds: float


@dataclass(frozen=True)
class AppExited:
    KIND: ClassVar[str] = "app-exited"
    status: int


@dataclass(frozen=True)
class Note:
    """Something the sensor wants the host's log to show."""

    KIND: ClassVar[str] = "note"
    text: str


SensorMessage = Watching | AppExited | Note


@dataclass(frozen=True)
class _Line:
    message: SensorMessage


def message_line(message: SensorMessage) -> str:
    return MESSAGE_PREFIX + wire.dumps(_Line(message), indent=None)


def parse_message_line(line: str) -> SensorMessage | None:
    """A sensor progress line, or None when it is the app's output or does
    not parse (the app shares the stream)."""
    if not line.startswith(MESSAGE_PREFIX):
        return None
    try:
        limits = wire.Limits(max_bytes=64 * 1024, max_string=16 * 1024, max_items=16)
        return wire.loads(_Line, line[len(MESSAGE_PREFIX) :], limits).message
    except wire.WireError:
        return None


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
