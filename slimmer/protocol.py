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

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar, Literal

from slimmer import wire
from slimmer.components import AppComponent
from slimmer.depsreport import DepsReport
from slimmer.fileset import (
    KERNEL_TREES,
    MAX_XATTR_BYTES,
    MAX_XATTRS,
    Selection,
    SelectionRequest,
    Xattr,
    kept_xattr,
)
from slimmer.packages import KeptPackages
from slimmer.pid1 import InitChoice
from slimmer.rootfs import is_image_path
from slimmer.trace import Lookup, SyscallReport, TracedFile

SENSOR_SCHEMA = "slim.sensor/1"

# The sensor lives in a directory of the container that the image cannot
# know in advance: /.slim-<random>, made fresh for each run. Inside it, the
# bundle (in BUNDLE_SUBDIR: copied in, or the engine's cached copy mounted
# read-only; the paths below are relative to it) and the run's own files.
SENSOR_DIR_PREFIX = "/.slim-"
BUNDLE_SUBDIR = "sensor"
BUNDLE_PYTHON = "bin/python3"
BUNDLE_LIBDIR = "lib"
BUNDLE_LOADER = "lib/ld.so"
BUNDLE_SCRIPT = "sensor.py"
RUN_SUBDIR = "run"
INIT_BINARY = "dumb-init"  # in the run dir: the wheel's binary for --init

# What the image's ENV could use to load code or data into the sensor (the
# bundled loader and libc honour them). The sensor's container gets each
# one set empty, which means "none" for every one of them (variables that
# act by their mere presence, such as LD_SHOW_AUXV, load nothing and are
# not touched). LC_ALL=C keeps the image's locale files out of it too.
SENSOR_ENV = {
    **{
        name: ""
        for name in (
            "LD_PRELOAD", "LD_AUDIT", "LD_LIBRARY_PATH", "LD_DEBUG", "LD_DEBUG_OUTPUT",
            "LD_PROFILE", "GCONV_PATH", "LOCPATH", "NLSPATH", "GLIBC_TUNABLES", "MALLOC_TRACE",
            "TZDIR", "TMPDIR", "LANGUAGE",
        )
    },
    "LC_ALL": "C",
}  # fmt: skip


@dataclass(frozen=True)
class SensorLayout:
    """Where one run's sensor lives in the container."""

    root: str  # /.slim-<random>

    @classmethod
    def new(cls) -> SensorLayout:
        return cls(SENSOR_DIR_PREFIX + os.urandom(8).hex())

    def path(self, relative: str) -> str:
        return f"{self.root}/{relative}"

    @property
    def run_dir(self) -> str:
        return self.path(RUN_SUBDIR)

    @property
    def bundle_dir(self) -> str:
        """Where the bundle is: copied in, or mounted read-only."""
        return self.path(BUNDLE_SUBDIR)

    def in_bundle(self, relative: str) -> str:
        return f"{self.bundle_dir}/{relative}"

    @property
    def config_path(self) -> str:
        return f"{self.run_dir}/config.json"

    @property
    def result_path(self) -> str:
        return f"{self.run_dir}/result.json"

    @property
    def output_tar(self) -> str:
        return f"{self.run_dir}/out.tar"

    @property
    def handover_config(self) -> str:
        """Where the host puts the collect job for a trace that awaits one."""
        return f"{self.run_dir}/collect.json"

    @property
    def handover_ready(self) -> str:
        """Put last, when the collect job (and its files) are all there."""
        return f"{self.run_dir}/collect.ready"

    @property
    def init_binary(self) -> str:
        """Where the host puts the dumb-init wheel's binary for --init."""
        return f"{self.run_dir}/{INIT_BINARY}"

    def skipped_trees(self) -> tuple[str, ...]:
        """Trees the sensor never watches or collects: the kernel's and its own."""
        return (*KERNEL_TREES, self.root)

    def command(self) -> list[str]:
        """How the container starts the sensor: through the bundled loader
        (so nothing of the image, not even a libc, is needed), isolated from
        PYTHON* variables and site packages, in UTF-8 mode."""
        return [
            self.in_bundle(BUNDLE_LOADER),
            "--library-path",
            self.in_bundle(BUNDLE_LIBDIR),
            self.in_bundle(BUNDLE_PYTHON),
            "-I",
            "-S",
            "-B",
            "-X",
            "utf8",
            self.in_bundle(BUNDLE_SCRIPT),
            self.config_path,
        ]


# The sensor's own lines on stderr start with this; everything else is the app's.
MESSAGE_PREFIX = "slim-sensor: "

# The host asks the sensor to stop the app with this signal (SIGRTMAX on
# Linux); the sensor then sends the app its stop signal. The stop signal
# itself never goes to the sensor: SIGKILL would end it before it writes
# the result, and one it does not handle (SIGPWR) would be ignored by a
# PID 1.
STOP_REQUEST_SIGNAL = 64

# Exit statuses of the sensor itself (the app's own status otherwise).
EXIT_SENSOR_FAILED = 125

# The paths of a trace (files, lookups, unobserved programs) take at most
# this many bytes of the sensor's result (slimmer/sensor/budget.py); past it
# the trace is partial. The host reads a result of at most MAX_RESULT_BYTES.
TRACE_PATH_BYTES = 64 * 1024 * 1024
MAX_RESULT_BYTES = 256 * 1024 * 1024


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
    syscalls: bool = True  # observe path lookups with ptrace + seccomp where that works
    path_bytes: int = TRACE_PATH_BYTES  # what the trace's paths may take in the result
    # slim build: when the tree is still the image's after the app (TraceResult.intact),
    # say TraceWritten and wait for a collect job to run in this same container.
    await_collect: bool = False


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


class InitWheel(StrEnum):
    """Whether the host put the dumb-init wheel's binary in the run dir."""

    PROVIDED = "provided"  # at SensorLayout.init_binary
    NOT_INSTALLED = "not-installed"  # the dumb-init package is not on the host


@dataclass(frozen=True, kw_only=True)
class StripJob:
    """--strip: drop debug sections and symbol tables of kept ELF files,
    never of files whose bytes are verified: those a package database
    lists with a digest, and those matching `protect` (globs)."""

    protect: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class CollectJob:
    KIND: ClassVar[str] = Mode.COLLECT.value
    selection: SelectionRequest
    # Keep what scanners read to name the distribution (/etc/os-release...);
    # the package database is read either way (owners, records, SBOM).
    package_records: bool = True
    strip: StripJob | None = None
    init: InitWheel | None = None  # --init


@dataclass(frozen=True)
class InventoryJob:
    KIND: ClassVar[str] = Mode.INVENTORY.value
    count_packages: bool = False


Job = TraceJob | DepsJob | CollectJob | InventoryJob


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    schema: Literal["slim.sensor/1"] = SENSOR_SCHEMA
    sensor_dir: str  # the SensorLayout root of this run
    job: Job

    @property
    def mode(self) -> Mode:
        return Mode(type(self.job).KIND)

    def to_json(self) -> str:
        return wire.dumps(self, indent=None)  # for the sensor: one line is written fastest

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
    lookups: tuple[Lookup, ...] = ()
    syscalls: SyscallReport
    files_dropped: int = 0  # files inotify saw that the path budget had no room for
    # With await_collect: whether this container's tree can stand for the image
    # (the app only made new paths; slimmer.sensor.pristine), and if not, why.
    intact: bool = False
    not_intact: str | None = None


@dataclass(frozen=True, kw_only=True)
class DepsResult:
    KIND: ClassVar[str] = Mode.DEPS.value
    report: DepsReport
    not_found: tuple[str, ...]
    tree: tuple[str, ...]


@dataclass(frozen=True)
class StrippedFile:
    """A kept ELF file written without its debug sections and symbol table."""

    path: str  # every name of the file (hard links) is listed
    old_size: int
    new_size: int
    sections: int  # how many sections were removed


@dataclass(frozen=True)
class UnstrippedFile:
    """A kept ELF file --strip left as it was, and why."""

    path: str
    why: str


@dataclass(frozen=True, kw_only=True)
class StripSummary:
    stripped: tuple[StrippedFile, ...] = ()
    refused: tuple[UnstrippedFile, ...] = ()  # not for the protected ones
    protected: tuple[UnstrippedFile, ...] = ()  # ELF files left alone: their bytes are used


@dataclass(frozen=True, kw_only=True)
class CollectResult:
    KIND: ClassVar[str] = Mode.COLLECT.value
    selection: Selection  # sizes are those written (after --strip)
    packages: KeptPackages
    strip: StripSummary | None = None
    init: InitChoice | None = None
    components: tuple[AppComponent, ...] = ()  # the app's own, for the SBOM
    seconds: dict[str, float] = field(default_factory=dict)  # the sensor's own steps


@dataclass(frozen=True, kw_only=True)
class InventoryResult:
    KIND: ClassVar[str] = Mode.INVENTORY.value
    files: int
    dirs: int
    symlinks: int
    other: int
    bytes: int
    dir_paths: tuple[str, ...]
    packages: int | None = None  # in its package database (count_packages); None: none read


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


def encode_result(result: SensorResult) -> Iterator[str]:
    """The result file's text, in pieces (a trace's can be tens of MB)."""
    return wire.dump_chunks(ResultFile(result=result))


def decode_result(data: bytes) -> SensorResult:
    """The sensor's result file, validated: its shape and types (wire), and
    what the types cannot say: paths are absolute, without NUL, at most
    PATH_MAX bytes; counts, sizes, modes and ids are in range. WireError if
    it is not one."""
    result = wire.loads(ResultFile, data, wire.Limits(max_bytes=MAX_RESULT_BYTES)).result
    check_result(result)
    return result


MAX_ID = 2**32 - 1


def _check_path(path: str, where: str) -> None:
    if not is_image_path(path):
        raise wire.WireError(f"{where}: {path[:80]!r} is not an absolute path of the image")


def _check_range(value: int, low: int, high: int, where: str) -> None:
    if not low <= value <= high:
        raise wire.WireError(f"{where}: {value} is out of range")


def _check_xattrs(xattrs: tuple[Xattr, ...], where: str) -> None:
    if len(xattrs) > MAX_XATTRS:
        raise wire.WireError(f"{where}: {len(xattrs)} extended attributes are too many")
    for xattr in xattrs:
        if not kept_xattr(xattr.name):
            raise wire.WireError(f"{where}: the extended attribute {xattr.name!r} is not kept")
        try:
            size = len(xattr.data)
        except ValueError:
            raise wire.WireError(f"{where}: {xattr.name} is not hex") from None
        _check_range(size, 0, MAX_XATTR_BYTES, f"{where}.{xattr.name}")


def check_result(result: SensorResult) -> None:
    if isinstance(result, TraceResult):
        _check_path(result.program, "program")
        for index, traced in enumerate(result.files):
            _check_path(traced.path, f"files[{index}]")
        for index, lookup in enumerate(result.lookups):
            _check_path(lookup.path, f"lookups[{index}]")
        _check_range(result.watches, 0, 2**31, "watches")
        _check_range(result.events, 0, 2**63, "events")
    elif isinstance(result, CollectResult):
        for index, entry in enumerate(result.selection.entries):
            where = f"selection.entries[{index}]"
            _check_path(entry.path, where)
            if entry.link is not None and ("\0" in entry.link or not entry.link):
                raise wire.WireError(f"{where}: a link target must be a non-empty path")
            _check_range(entry.size, 0, 2**63, f"{where}.size")
            _check_range(entry.mode, 0, 0o7777, f"{where}.mode")
            _check_range(entry.uid, 0, MAX_ID, f"{where}.uid")
            _check_range(entry.gid, 0, MAX_ID, f"{where}.gid")
            _check_xattrs(entry.xattrs, where)
        if result.strip is not None:
            sizes = {e.path: e.size for e in result.selection.entries}
            for index, stripped in enumerate(result.strip.stripped):
                where = f"strip.stripped[{index}]"
                if sizes.get(stripped.path) != stripped.new_size:
                    raise wire.WireError(f"{where}: not a file of the selection of that size")
                _check_range(stripped.old_size, stripped.new_size, 2**63, f"{where}.old_size")
            for index, left in enumerate(result.strip.protected):
                _check_path(left.path, f"strip.protected[{index}]")
        if result.init is not None:
            _check_path(result.init.path, "init.path")
    elif isinstance(result, InventoryResult):
        for name in ("files", "dirs", "symlinks", "other", "bytes"):
            _check_range(getattr(result, name), 0, 2**63, name)
        for index, path in enumerate(result.dir_paths):
            _check_path(path, f"dir_paths[{index}]")
        if result.packages is not None:
            _check_range(result.packages, 0, 2**31, "packages")


# -- progress lines on stderr --------------------------------------------------


@dataclass(frozen=True)
class Watching:
    """Every directory is watched; the app starts right after."""

    KIND: ClassVar[str] = "watching"
    directories: int
    seconds: float


@dataclass(frozen=True)
class TraceWritten:
    """The trace result is written; the tree is intact and the sensor waits
    for the collect job (TraceJob.await_collect)."""

    KIND: ClassVar[str] = "trace-written"


@dataclass(frozen=True)
class CollectWritten:
    """After a collect in the traced container: its result and tar are
    written; the sensor waits to be removed (the host reads them first)."""

    KIND: ClassVar[str] = "collect-written"


@dataclass(frozen=True)
class AppExited:
    KIND: ClassVar[str] = "app-exited"
    status: int


@dataclass(frozen=True)
class Note:
    """Something the sensor wants the host's log to show."""

    KIND: ClassVar[str] = "note"
    text: str


class ProgressStep(StrEnum):
    WATCH = "watch"  # directories watched so far (the total is not known)
    COLLECT = "collect"  # bytes of the selected files tarred so far, of `total`


@dataclass(frozen=True)
class Progress:
    """How far a long step of the sensor got."""

    KIND: ClassVar[str] = "progress"
    step: ProgressStep
    done: int
    total: int | None = None


SensorMessage = Watching | TraceWritten | CollectWritten | AppExited | Note | Progress


@dataclass(frozen=True)
class _Line:
    message: SensorMessage


def message_line(message: SensorMessage) -> str:
    """One line, without its newline (wire.dumps ends with one: the host
    read an empty line of the app after each message)."""
    return MESSAGE_PREFIX + wire.dumps(_Line(message), indent=None).rstrip("\n")


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
