"""The trace: what the app touched in the fat image, the image's contract,
and the probes with the fat image's answers. Versioned JSON (slim.trace/2),
read and written through `slimmer.wire`, so a trace file is validated data.

slim.trace/2 differs from /1 in that probe answers and probes carry a
"kind" and the healthcheck is typed; /1 traces are refused with a hint to
trace again.
"""

from __future__ import annotations

import re
import shlex
import signal
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Literal

from slimmer import __version__, wire
from slimmer.errors import ExitCode, SlimError
from slimmer.rootfs import Kind, is_image_path
from slimmer.userspec import UserSpecError, parse_user_spec

TRACE_SCHEMA = "slim.trace/2"
DEFAULT_STOP_SIGNAL = "SIGTERM"
ENGINE_HEALTH_SHELL = ("/bin/sh", "-c")  # what Docker and Podman run CMD-SHELL with
EXPECT_FAILURE = "!"  # in front of a probe: it is expected to fail


class TraceError(SlimError):
    """A trace file that cannot be used."""


class Access(StrEnum):
    """What happened to a path while it was traced."""

    OPENED = "opened"
    READ = "read"
    EXECUTED = "executed"  # seen as a process's /proc/N/exe
    LISTED = "listed"  # a directory was read
    WRITTEN = "written"  # a directory: something was created or deleted in it
    CREATED = "created"
    DELETED = "deleted"


class PathAction(StrEnum):
    """What a process did with a path it named."""

    STAT = "stat"  # stat, lstat, statx, statfs, getxattr, listxattr
    ACCESS = "access"
    READLINK = "readlink"
    OPEN = "open"  # opened read-only (a file or a directory)
    WRITE = "write"  # opened for writing, or truncated
    CREATE = "create"  # O_CREAT, mkdir, mknod, symlink, new name of link, bind
    EXEC = "exec"
    CHDIR = "chdir"
    CHROOT = "chroot"
    RENAME_FROM = "rename-from"
    RENAME_TO = "rename-to"
    LINK_FROM = "link-from"  # the existing name a hard link was made of
    REMOVE = "remove"  # unlink, rmdir
    CHANGE_ATTRS = "change-attrs"  # chmod, chown, utimes, setxattr
    WATCH = "watch"  # inotify_add_watch
    CONNECT = "connect"  # a Unix socket


@dataclass(frozen=True)
class Lookup:
    """A path the app named to the kernel, seen at the system call: as it
    named it (absolute, not resolved), what it did, whether the call
    followed a final symlink, whether the name resolved when it began."""

    path: str
    action: PathAction
    follow: bool
    existed: bool


@dataclass(frozen=True, kw_only=True)
class SyscallReport:
    """Whether the syscall layer observed the run, and how completely."""

    observed: bool
    reason: str | None = None  # why not (ptrace or seccomp refused, ...)
    dropped: int = 0  # lookups not kept because the log was full
    unresolved: int = 0  # names unreadable, or relative with no readable directory
    unobserved_programs: tuple[str, ...] = ()  # ran in an ABI that is not traced
    # seccomp filters the app installed that may send calls to a tracer of its
    # own (SECCOMP_RET_TRACE): the sensor's filter outranks them on the calls
    # it holds, so that tracer did not hear of those (docs/syscalls.md)
    app_trace_filters: int = 0


GONE = "gone"  # the kind of a traced path that no longer existed at the end


class TraceStatus(StrEnum):
    """Whether a trace can be built from: only a complete one, unless the
    user insists (build --force)."""

    COMPLETE = "complete"  # the app ran and was exercised as asked
    PARTIAL = "partial"  # it ran, but some of what it touched may be missing
    FAILED = "failed"  # it did not run as asked (exited at start, never answered)


@dataclass(frozen=True)
class Healthcheck:
    """The image's HEALTHCHECK as the engine reports it; durations in ns."""

    test: tuple[str, ...]
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    retries: int = 0

    @classmethod
    def from_inspect(cls, data: dict[str, Any] | None) -> Healthcheck | None:
        if not data:
            return None
        return cls(
            test=tuple(str(part) for part in data.get("Test") or ()),
            interval=int(data.get("Interval") or 0),
            timeout=int(data.get("Timeout") or 0),
            start_period=int(data.get("StartPeriod") or 0),
            retries=int(data.get("Retries") or 0),
        )


@dataclass(frozen=True, kw_only=True)
class ImageConfig:
    """The parts of an image's config that the micro image must keep."""

    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    env: tuple[str, ...] = ()  # "NAME=VALUE", in image order
    workdir: str = ""
    user: str = ""
    exposed_ports: tuple[str, ...] = ()  # "80/tcp"
    labels: dict[str, str] = field(default_factory=dict)
    stop_signal: str | None = None
    healthcheck: Healthcheck | None = None
    volumes: tuple[str, ...] = ()
    shell: tuple[str, ...] | None = None
    # Fields the engine did not report, so the micro image cannot keep them
    # ("shell": Podman reports no SHELL for an image built by Docker).
    unreported: tuple[str, ...] = ()

    @classmethod
    def from_inspect(cls, attrs: dict[str, Any]) -> ImageConfig:
        config = attrs.get("Config") or {}

        def argv(key: str) -> tuple[str, ...] | None:
            value = config.get(key)
            return None if value is None else tuple(str(part) for part in value)

        return cls(
            entrypoint=argv("Entrypoint"),
            cmd=argv("Cmd"),
            env=tuple(config.get("Env") or ()),
            workdir=config.get("WorkingDir") or "",
            user=config.get("User") or "",
            exposed_ports=tuple(sorted((config.get("ExposedPorts") or {}).keys())),
            labels=dict(config.get("Labels") or {}),
            stop_signal=config.get("StopSignal") or None,
            healthcheck=Healthcheck.from_inspect(config.get("Healthcheck")),
            volumes=tuple(sorted((config.get("Volumes") or {}).keys())),
            shell=argv("Shell"),
        )

    def env_dict(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for item in self.env:
            name, _, value = item.partition("=")
            env[name] = value
        return env

    def tcp_ports(self) -> list[int]:
        ports = []
        for spec in self.exposed_ports:
            number, _, proto = spec.partition("/")
            if (proto or "tcp") == "tcp" and number.isdigit():
                ports.append(int(number))
        return ports

    def stop_signal_number(self) -> int:
        return parse_signal(self.stop_signal or DEFAULT_STOP_SIGNAL)

    def healthcheck_argv(self) -> list[str] | None:
        """What the engine runs for HEALTHCHECK: CMD as is, CMD-SHELL through
        `/bin/sh -c`; None without a check. Docker and Podman do not give a
        container the image's SHELL, so a CMD-SHELL check runs with /bin/sh
        whatever SHELL says (moby #28385)."""
        test = list(self.healthcheck.test) if self.healthcheck else []
        if len(test) < 2 or test[0] not in ("CMD", "CMD-SHELL"):
            return None
        if test[0] == "CMD-SHELL":
            return [*ENGINE_HEALTH_SHELL, " ".join(test[1:])]
        return test[1:]

    def healthcheck_programs(self) -> list[str]:
        """The programs a HEALTHCHECK may start, to keep with their closure:
        its argv[0], and for CMD-SHELL also the image's SHELL, which an engine
        that passes SHELL on to the container would use."""
        argv = self.healthcheck_argv()
        if not argv:
            return []
        programs = [argv[0]]
        if self.healthcheck and self.healthcheck.test[0] == "CMD-SHELL" and self.shell:
            programs.append(self.shell[0])
        return list(dict.fromkeys(programs))

    def has_healthcheck(self) -> bool:
        """Whether the engine will run a HEALTHCHECK (not none, not NONE)."""
        return self.healthcheck_argv() is not None

    def command(self) -> list[str]:
        """ENTRYPOINT + CMD, what the image runs by default."""
        return command_line(self, None, None)


SIGRTMIN, SIGRTMAX = 34, 64  # Linux, as the engine names them (RTMIN+n, RTMAX-n)
_REALTIME = re.compile(r"SIG(RTMIN|RTMAX)(?:([+-])(\d+))?")


def parse_signal(spec: str) -> int:
    """'SIGQUIT', 'QUIT', '3', 'SIGRTMIN+3' or 'RTMAX-1' -> the number."""
    text = spec.strip().upper()
    if text.isdigit() and 0 < int(text) <= SIGRTMAX:
        return int(text)
    name = text if text.startswith("SIG") else f"SIG{text}"
    realtime = _REALTIME.fullmatch(name)
    if realtime:
        base = SIGRTMIN if realtime.group(1) == "RTMIN" else SIGRTMAX
        offset = int(realtime.group(3) or 0) * (-1 if realtime.group(2) == "-" else 1)
        if SIGRTMIN <= base + offset <= SIGRTMAX:
            return base + offset
    try:
        return int(signal.Signals[name])
    except KeyError:
        error = TraceError(f"unknown stop signal {spec!r}", "give a name like SIGTERM or a number")
        error.exit_code = ExitCode.USAGE
        raise error from None


def command_line(
    config: ImageConfig, cmd: list[str] | None, entrypoint: list[str] | None
) -> list[str]:
    """What Docker would run: ENTRYPOINT + CMD, where a given command replaces
    CMD and a given entrypoint replaces both (as `docker run` does)."""
    if entrypoint is not None:
        return [*entrypoint, *(cmd or [])]
    return [*(config.entrypoint or ()), *(cmd if cmd else config.cmd or ())]


@dataclass(frozen=True)
class TracedFile:
    path: str
    kind: Kind | Literal["gone"]  # what the path was when the app stopped
    access: tuple[Access, ...]

    @property
    def created(self) -> bool:
        return Access.CREATED in self.access


# -- probes and their answers ------------------------------------------------


def _expected(label: str, expect_failure: bool) -> str:
    return EXPECT_FAILURE + label if expect_failure else label


class Discovery(StrEnum):
    """Who named an HTTP probe: the user, a crawl of the app's pages, or an
    OpenAPI document."""

    GIVEN = "given"
    CRAWL = "crawl"
    OPENAPI = "openapi"


@dataclass(frozen=True)
class HttpProbe:
    """An HTTP request; port None means each exposed TCP port. It succeeds
    when the app answers with a status below 500; `expect_failure` (`!` in
    front of it) expects no answer or a 5xx. A probe slim found itself
    (a crawled link, an OpenAPI route) needs an answer, whatever its status:
    the app decides what that route answers, and verify compares it."""

    KIND: ClassVar[str] = "http"
    method: str
    path: str
    port: int | None = None
    expect_failure: bool = False
    found_by: Discovery = Discovery.GIVEN

    def label(self) -> str:
        text = f"{self.method} {self.path}" + (f" :{self.port}" if self.port is not None else "")
        if self.found_by is not Discovery.GIVEN:
            text += f" ({self.found_by.value})"
        return _expected(text, self.expect_failure)


@dataclass(frozen=True)
class ExecProbe:
    """A command run inside the container, as the image's USER; it succeeds
    when it exits 0 (with `expect_failure`, when it exits otherwise)."""

    KIND: ClassVar[str] = "exec"
    argv: tuple[str, ...]
    expect_failure: bool = False

    def label(self) -> str:
        return _expected("exec " + shlex.join(self.argv), self.expect_failure)


@dataclass(frozen=True)
class ClientProbe:
    """A command run in a separate container of the fat image that shares
    the app's network (a client such as redis-cli that reaches the app at
    127.0.0.1): it exercises the app, and its own files are not traced.
    `port` is the app's port it talks to (SLIM_TARGET_PORT in its
    environment; None: the first exposed TCP port); slim waits until the
    app listens there before it starts."""

    KIND: ClassVar[str] = "client"
    argv: tuple[str, ...]
    port: int | None = None
    expect_failure: bool = False

    def label(self) -> str:
        return _expected("client " + shlex.join(self.argv), self.expect_failure)


@dataclass(frozen=True)
class HostProbe:
    """A shell command run on the host, pointed at the app: SLIM_TARGET_HOST
    and SLIM_TARGET_PORT (the host port of `port`, None: of the first exposed
    TCP port)."""

    KIND: ClassVar[str] = "host"
    command: str
    port: int | None = None
    expect_failure: bool = False

    def label(self) -> str:
        return _expected(f"host {self.command}", self.expect_failure)


@dataclass(frozen=True)
class HealthcheckProbe:
    """The image's HEALTHCHECK command, run as the engine runs it, until it
    succeeds."""

    KIND: ClassVar[str] = "healthcheck"
    expect_failure: ClassVar[bool] = False  # the engine's check must pass
    argv: tuple[str, ...]

    def label(self) -> str:
        return "HEALTHCHECK"


Probe = HttpProbe | ExecProbe | ClientProbe | HostProbe | HealthcheckProbe


@dataclass(frozen=True)
class HttpAnswer:
    KIND: ClassVar[str] = "http"
    status: int
    headers: dict[str, str]
    body_sha256: str
    body_size: int

    def outcome(self) -> str:
        return str(self.status)


@dataclass(frozen=True)
class CommandAnswer:
    """A command's exit code, hashes of its output, and its first 4 kB."""

    KIND: ClassVar[str] = "command"
    exit_code: int
    stdout_sha256: str
    stderr_sha256: str
    stdout: str
    stderr: str

    def outcome(self) -> str:
        return f"exit {self.exit_code}"


@dataclass(frozen=True)
class NoAnswer:
    """The probe got no answer (a connection error, a time-out)."""

    KIND: ClassVar[str] = "none"
    error: str

    def outcome(self) -> str:
        return self.error


Answer = HttpAnswer | CommandAnswer | NoAnswer


@dataclass(frozen=True)
class ProbeResult:
    """One probe as it ran (an HTTP probe with its port), its answer, and
    whether that answer is what the probe expects (see `answer_expected`)."""

    probe: Probe
    answer: Answer
    ok: bool


SERVER_ERROR = 500  # an HTTP status from here on is the app failing


def answer_succeeded(probe: Probe, answer: Answer) -> bool:
    """Whether the app did what the probe asked: an HTTP status below 500,
    a command that exited 0."""
    if isinstance(probe, HttpProbe):
        if probe.found_by is not Discovery.GIVEN:
            return isinstance(answer, HttpAnswer)
        return isinstance(answer, HttpAnswer) and answer.status < SERVER_ERROR
    return isinstance(answer, CommandAnswer) and answer.exit_code == 0


def answer_expected(probe: Probe, answer: Answer) -> bool:
    """Whether the answer is what the probe expects: success, or failure for
    a probe marked `!` (a HEALTHCHECK must always succeed)."""
    succeeded = answer_succeeded(probe, answer)
    return not succeeded if probe.expect_failure else succeeded


# -- the trace ----------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Trace:
    schema: Literal["slim.trace/2"] = TRACE_SCHEMA
    slim_version: str = __version__
    image: str
    image_id: str
    config: ImageConfig
    command: tuple[str, ...]
    user: str
    files: tuple[TracedFile, ...]
    lookups: tuple[Lookup, ...] = ()  # seen at the system call (see SyscallReport)
    syscalls: SyscallReport | None = None
    probes: tuple[ProbeResult, ...] = ()
    exit_status: int | None = None
    exit_signal: int | None = None
    status: TraceStatus = TraceStatus.COMPLETE
    problems: tuple[str, ...] = ()  # why the trace is partial or failed
    until_exit: bool = False  # a batch job: verify compares its output
    expect_exit: int = 0  # the exit status a batch job must end with
    watches: int = 0
    events: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.status is TraceStatus.COMPLETE

    def to_json(self) -> str:
        return wire.dumps(self)

    @classmethod
    def from_json(cls, text: str | bytes) -> Trace:
        try:
            data = wire.parse(text)
        except wire.WireError as exc:
            raise TraceError(f"not a trace file: {exc.message}") from None
        found = data.get("schema") if isinstance(data, dict) else None
        if found != TRACE_SCHEMA:
            raise TraceError(
                f"not a {TRACE_SCHEMA} trace (schema: {found!r})", "make a new one with slim trace"
            )
        try:
            trace = wire.decode(cls, data)
        except wire.WireError as exc:
            raise TraceError(
                f"malformed trace: {exc.message}", "make a new one with slim trace"
            ) from None
        problem = trace_problem(trace)
        if problem is not None:
            raise TraceError(f"malformed trace: {problem}", "make a new one with slim trace")
        return trace

    def save(self, path: Path) -> None:
        """Write it as slim writes every output (slimmer.outputs): a regular
        file is replaced whole, atomically, so two slim runs never see each
        other's half-written traces; a link is followed; a FIFO is written
        into."""
        from slimmer.outputs import write_output  # host only: the sensor imports this module

        write_output(path, self.to_json().encode("ascii"), "the trace")

    @classmethod
    def load(cls, path: Path) -> Trace:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise TraceError(f"cannot read trace {path}: {exc.strerror}") from None
        return cls.from_json(data)


# What an HTTP request line can carry: a method is a token (RFC 9110), a
# target has no space or control character (nothing a request line could
# be split at); http.client refuses the rest with a traceback.
HTTP_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
TARGET_FORBIDDEN = re.compile(r"[\x00-\x20\x7f]")


def http_probe_problem(probe: HttpProbe) -> str | None:
    """Why an HTTP probe cannot be sent as it is, or None."""
    if not HTTP_TOKEN.fullmatch(probe.method):
        return f"the HTTP method {probe.method[:40]!r} is not a token"
    if not probe.path.startswith("/") or TARGET_FORBIDDEN.search(probe.path):
        return f"the HTTP path {probe.path[:80]!r} has a space or a control character"
    if probe.port is not None and not 0 < probe.port < 65536:
        return f"the port {probe.port} is not a TCP port"
    return None


def trace_problem(trace: Trace) -> str | None:
    """What the types of a trace cannot say, checked when it is read (a
    trace file is untrusted): its paths name paths of an image, its command
    has no NUL, its user is one the kernel can take, its HTTP probes can be
    sent. None when it is sound."""
    for index, traced in enumerate(trace.files):
        if not is_image_path(traced.path):
            return f"files[{index}]: {traced.path[:80]!r} is not an absolute path of the image"
    for index, lookup in enumerate(trace.lookups):
        if not is_image_path(lookup.path):
            return f"lookups[{index}]: {lookup.path[:80]!r} is not an absolute path of the image"
    if any("\0" in part for part in trace.command):
        return "the command holds a NUL"
    try:
        parse_user_spec(trace.user)
    except UserSpecError as exc:
        return f"user {trace.user[:40]!r}: {exc}"
    for index, result in enumerate(trace.probes):
        problem = probe_problem(result.probe)
        if problem is not None:
            return f"probes[{index}]: {problem}"
    return None


def probe_problem(probe: Probe) -> str | None:
    """Why a probe read from a trace cannot be run as it is, or None: an
    HTTP probe that cannot be sent, a command without a program (an empty
    argv reached the engine as an exec it refused) or with a NUL, a port
    that is not a TCP port."""
    if isinstance(probe, HttpProbe):
        return http_probe_problem(probe)
    if isinstance(probe, HostProbe):
        if not probe.command.strip() or "\0" in probe.command:
            return "the host probe's command is empty or holds a NUL"
    elif not probe.argv or not probe.argv[0] or any("\0" in part for part in probe.argv):
        return f"the {probe.KIND} probe's command is empty or holds a NUL"
    port = getattr(probe, "port", None)
    if port is not None and not 0 < port < 65536:
        return f"the port {port} is not a TCP port"
    return None


def file_safe(name: str) -> str:
    """An image name or tag as a file name: anything but [A-Za-z0-9._-] -> _."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def default_trace_path(image: str) -> Path:
    """.slim/<image>.trace.json, with the image name made file-safe."""
    return Path(".slim") / f"{file_safe(image)}.trace.json"
