"""The files slim writes for the user (the trace, the build context, the
report, the SBOM), written the way a Unix tool writes its output.

A path is followed through its symbolic links (the host's paths are the
user's; the link stays a link). What is there decides how it is written:

- nothing yet, or a regular file: a new file beside it, renamed over it
  once complete, so a reader never sees half of it and a failed or
  interrupted write leaves what was there;
- a FIFO or a device (`/dev/stdout`, a pipe someone reads): written into,
  never replaced, never removed;
- anything else (a directory, a socket, a loop of links): refused.

slim only ever removes the temporary file it made itself. `check_output`
runs before any container starts, so an output that cannot be written
(`/proc/x`, a directory that is not there) fails at once, not after a
trace; `writing` looks again when the bytes are ready (what is at the path
then decides).
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import BinaryIO

from slimmer.cleanup import signals_held
from slimmer.errors import ExitCode, NotFound, SlimError, UsageError

NEW_FILE_MODE = 0o666  # as open(2) with O_CREAT in a shell: the umask applies
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class OutputKind(Enum):
    FILE = "file"  # a regular file, or nothing yet: replaced whole, atomically
    STREAM = "stream"  # a FIFO, a character or block device: written into


@dataclass(frozen=True)
class Output:
    """Where an output's bytes go and how."""

    given: Path  # as the user named it
    target: Path  # the given path, its symbolic links followed
    kind: OutputKind
    mode: int | None = None  # the permissions of the regular file it replaces


class OutputError(SlimError):
    """An output could not be written; nothing of the user's was removed."""


def check_output(path: Path, option: str) -> Output:
    """How `path` will be written, checked now, before anything runs: it is
    not a directory or a socket, its directory exists, and slim can make a
    file there (or write into the FIFO or device)."""
    output = resolve_output(path, option)
    if output.kind is OutputKind.FILE:
        _check_directory(output.target, path, option)
    return output


def resolve_output(path: Path, option: str) -> Output:
    """Where `path` leads and how it is written (see the module's rules)."""
    target = Path(os.path.realpath(path))
    try:
        info: os.stat_result | None = os.lstat(target)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise UsageError(f"{option} {path}: {exc.strerror}", _hint(exc.errno)) from None
    if info is None or stat.S_ISREG(info.st_mode):
        if info is not None and not os.access(target, os.W_OK):
            raise UsageError(
                f"{option} {path} cannot be written",
                "choose a path in a directory you can write to",
            )
        mode = stat.S_IMODE(info.st_mode) if info is not None else None
        return Output(path, target, OutputKind.FILE, mode)
    if stat.S_ISFIFO(info.st_mode) or stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode):
        if not os.access(target, os.W_OK):
            raise UsageError(f"{option} {path} cannot be written", "choose another path")
        return Output(path, target, OutputKind.STREAM)
    if stat.S_ISDIR(info.st_mode):
        raise UsageError(f"{option} {path} is a directory", "give the path of a file")
    if stat.S_ISLNK(info.st_mode):
        raise UsageError(f"{option} {path}: a loop of symbolic links", "give the path of a file")
    raise UsageError(f"{option} {path} is a socket", "give the path of a file, a FIFO or a device")


def _check_directory(target: Path, given: Path, option: str) -> None:
    """The directory exists and slim can make (and remove) its file there:
    the only true test (root passes access(2) for /proc, where nothing can
    be made)."""
    directory = target.parent
    if not directory.is_dir():
        raise NotFound(
            f"{option} {given}: the directory {directory} does not exist",
            "create it first, or choose another path",
        )
    try:
        fd, probe = _new_file(directory, target.name)
    except OSError as exc:
        raise UsageError(
            f"{option} {given} cannot be written: {exc.strerror}",
            "choose a path in a directory you can write to",
        ) from None
    os.close(fd)
    os.unlink(probe)


def _new_file(directory: Path, name: str) -> tuple[int, Path]:
    """A new file of slim's own beside `name`, open for writing."""
    for _ in range(100):
        candidate = directory / f".{name}.{secrets.token_hex(4)}.slim-tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            return os.open(candidate, flags, NEW_FILE_MODE), candidate
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(directory))


@contextmanager
def writing(path: Path, what: str) -> Iterator[BinaryIO]:
    """A binary stream to write the output at `path` (`what` names it in
    errors, e.g. "the build context"). Committed when the block ends without
    an error: a regular file is renamed into place, a FIFO or device has
    had its bytes. On an error, or a signal, only slim's temporary file is
    removed; an OSError becomes an OutputError that says what to do."""
    try:
        output = resolve_output(path, what)
    except SlimError as exc:
        raise OutputError(f"cannot write {exc.message}", exc.hint) from None
    if output.kind is OutputKind.STREAM:
        with _stream_errors(output, what):
            fd = os.open(output.target, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
            with os.fdopen(fd, "wb") as stream:
                yield stream
        return
    temporary: Path | None = None
    try:
        with _stream_errors(output, what):
            output.target.parent.mkdir(parents=True, exist_ok=True)  # .slim/ for the defaults
            fd, temporary = _new_file(output.target.parent, output.target.name)
            with os.fdopen(fd, "wb") as stream:
                if output.mode is not None:
                    os.fchmod(stream.fileno(), output.mode)
                yield stream
            with signals_held():
                os.replace(temporary, output.target)
                temporary = None
    finally:
        if temporary is not None:
            with signals_held():
                temporary.unlink(missing_ok=True)


@contextmanager
def _stream_errors(output: Output, what: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise output_error(output.given, what, exc) from None


def output_error(path: Path, what: str, exc: OSError) -> OutputError:
    """What failed, in one line, and what to do, by the kind of failure."""
    reason = exc.strerror or str(exc)
    if exc.errno == errno.EPIPE:
        error = OutputError(
            f"cannot write {what} {path}: whatever reads it stopped reading ({reason})",
            "let the reader read to the end, or write to a file",
        )
    else:
        error = OutputError(f"cannot write {what} {path}: {reason}", _hint(exc.errno))
    if exc.errno in NO_SPACE:
        error.exit_code = ExitCode.RESOURCE
    return error


def _hint(number: int | None) -> str:
    if number in NO_SPACE:
        return "free some space, or write it elsewhere"
    return "choose a path you can write to"


def write_output(path: Path, data: bytes, what: str) -> None:
    """The whole output at once (a trace, a report, an SBOM)."""
    with writing(path, what) as out:
        out.write(data)
