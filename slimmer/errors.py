"""The one error base of slim, and the exit codes the CLI maps errors to."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1  # a gate or a check failed (compare, verify)
    USAGE = 2  # click's own code for bad options
    ERROR = 3  # slim could not do the job
    ENGINE = 4  # the Docker engine is not reachable
    NOT_FOUND = 5  # an image, a command or a file is not there
    APP = 6  # the traced app failed
    RESOURCE = 7  # a limit of this host: inotify watches, disk space, what the runtime may not set
    STALE_TRACE = 8  # a trace of another image, or an incomplete one
    INTERRUPTED = 130


class SlimError(Exception):
    """An error a user can act on: one line, plus a hint."""

    exit_code: ExitCode = ExitCode.ERROR

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class PathError(SlimError):
    """A path inside an image root could not be resolved."""

    exit_code = ExitCode.NOT_FOUND

    def __init__(self, path: str, errno: int, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.errno = errno


class EngineError(SlimError):
    """The Docker engine could not be reached, or refused a request."""

    exit_code = ExitCode.ENGINE


class NotFound(SlimError):
    """An image, a command or a file is not where the user said."""

    exit_code = ExitCode.NOT_FOUND


class CommandNotRunnable(NotFound):
    """The OCI runtime could not start a container's command: it is not in
    the image, not executable, or for another CPU."""


class RuntimeRefused(SlimError):
    """The engine's OCI runtime (runc, crun) refused to start a container
    because of a limit or policy of the host (an rlimit it may not set,
    cgroups, a security profile)."""

    exit_code = ExitCode.RESOURCE


class UsageError(SlimError):
    """Options that do not fit together, or a value that cannot be read."""

    exit_code = ExitCode.USAGE


class Terminated(KeyboardInterrupt):
    """slim got a terminating signal (SIGTERM, SIGHUP): cleaned up like
    Ctrl-C, with exit status 128 + the signal."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal_number)
        self.signal_number = signal_number
