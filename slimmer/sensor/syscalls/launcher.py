"""The launcher: the app's first process, a fresh interpreter that drops to
the app's user, installs the seccomp filter and execs the app, seized by
the tracer before it does anything.

See docs/syscalls.md ("The launcher").
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from slimmer.sensor.syscalls.abi import MACHINES, SYSCALL_NUMBERS
from slimmer.sensor.syscalls.bpf import SockFprog, pack_filter, seccomp_filter
from slimmer.sensor.syscalls.kernel import (
    PR_SET_DUMPABLE,
    PR_SET_NO_NEW_PRIVS,
    PR_SET_PDEATHSIG,
    PR_SET_SECCOMP,
    SECCOMP_FILTER_FLAG_NEW_LISTENER,
    SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
    SECCOMP_MODE_FILTER,
    SECCOMP_SET_MODE_FILTER,
    load_libc,
)

BOOT = (
    "import sys\n"
    "sys.path.insert(0, sys.argv[1])\n"
    "from slimmer.sensor.syscalls.launcher import launcher_main\n"
    "launcher_main(sys.argv[2:])\n"
)


class LaunchMode(Enum):
    EXEC = "exec"  # exec the app
    PROBE = "probe"  # make one traced call and exit 0


class Listens(Enum):
    """How the tracer may hear of path calls, at best."""

    KILLABLE = "killable"  # a listener whose received calls wait killable
    INTERRUPTIBLE = "interruptible"  # a listener (Linux 5.5 to 5.18)


class LaunchStage(Enum):
    """Where the launcher failed; the first three mean no tracing here."""

    REQUEST = "request"
    NO_NEW_PRIVS = "no_new_privs"
    SECCOMP = "seccomp"
    TRACED_CALL = "traced_call"  # probe: the traced call was not traced
    CHDIR = "chdir"
    USER = "user"
    EXEC = "exec"


@dataclass(frozen=True)
class LaunchRequest:
    """What the launcher execs, as whom, where. Strings are str with
    surrogateescape; the request carries their bytes exactly."""

    program: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    workdir: str
    uid: int | None = None
    gid: int | None = None
    groups: tuple[int, ...] | None = None
    mode: LaunchMode = LaunchMode.EXEC
    notify: bool = False  # try a seccomp listener for path calls (the tracer decides)
    killable: bool = True  # and that its received calls wait killable (Linux >= 5.19)

    @classmethod
    def of(
        cls,
        program: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        workdir: str,
        uid: int | None = None,
        gid: int | None = None,
        groups: Sequence[int] | None = None,
    ) -> LaunchRequest:
        return cls(
            program,
            tuple(argv),
            tuple(env.items()),
            workdir,
            uid,
            gid,
            None if groups is None else tuple(groups),
        )

    def to_wire(self) -> bytes:
        def raw(text: str) -> str:
            return os.fsencode(text).decode("latin-1")

        return json.dumps(
            {
                "mode": self.mode.value,
                "program": raw(self.program),
                "argv": [raw(a) for a in self.argv],
                "env": [[raw(k), raw(v)] for k, v in self.env],
                "workdir": raw(self.workdir),
                "uid": self.uid,
                "gid": self.gid,
                "groups": None if self.groups is None else list(self.groups),
                "notify": self.notify,
                "killable": self.killable,
            }
        ).encode()


def _fail(err_fd: int, stage: LaunchStage, number: int, message: str) -> None:
    report = json.dumps({"stage": stage.value, "errno": number, "message": message})
    with contextlib.suppress(OSError):
        os.write(err_fd, report.encode())
    os._exit(127 if number == errno.ENOENT else 126)


def read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


LAUNCHER_READY = b"R"  # the launcher's first byte on its error socket
# its second, once the filter is in place: how the tracer hears of path calls
LAUNCHER_LISTENS = b"L"  # a seccomp listener, sent along with this byte
LAUNCHER_LISTENS_KILLABLE = b"K"  # one whose received calls wait killable
LAUNCHER_PTRACED = b"T"  # ptrace stops only


def launcher_main(args: list[str]) -> None:
    """The launcher: say it is ready (its code is loaded: the sensor may
    remove its files now), wait until the tracer has seized this process
    and sent the request (EOF on the pipe), then become the app."""
    request_fd, err_fd = int(args[0]), int(args[1])
    os.set_inheritable(err_fd, False)
    os.write(err_fd, LAUNCHER_READY)
    stage = LaunchStage.REQUEST
    try:
        wire = json.loads(read_all(request_fd))
        os.close(request_fd)

        def raw(text: str) -> bytes:
            return text.encode("latin-1")

        libc = load_libc()
        machine = os.uname().machine
        trace_program = pack_filter(seccomp_filter(machine))
        notify_program = pack_filter(seccomp_filter(machine, notify=True))
        mode = LaunchMode(wire["mode"])
        if mode is LaunchMode.EXEC:
            stage = LaunchStage.CHDIR
            os.chdir(raw(wire["workdir"]))
        stage = LaunchStage.USER
        if wire["groups"] is not None:
            os.setgroups(wire["groups"])
        if wire["gid"] is not None:
            os.setgid(wire["gid"])
        if wire["uid"] is not None:
            os.setuid(wire["uid"])
        # A uid change made this process non-dumpable: the tracer (without
        # CAP_SYS_PTRACE) could not read the exec's path. The exec resets it.
        libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
        for number in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(number, signal.SIG_DFL)
        stage = LaunchStage.NO_NEW_PRIVS
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
        stage = LaunchStage.SECCOMP
        listens = None
        if wire["notify"]:
            listens = Listens.KILLABLE if wire["killable"] else Listens.INTERRUPTIBLE
        _install_filter(libc, err_fd, machine, trace_program, notify_program, listens)
        if mode is LaunchMode.PROBE:
            stage = LaunchStage.TRACED_CALL
            os.stat("/")  # ENOSYS unless a tracer took the stop
            os._exit(0)
        stage = LaunchStage.EXEC
        env = {raw(k): raw(v) for k, v in wire["env"]}
        os.execve(raw(wire["program"]), [raw(a) for a in wire["argv"]], env)
    except OSError as exc:
        _fail(err_fd, stage, exc.errno or 0, exc.strerror or str(exc))
    except Exception as exc:  # a bad request: say so, never run the app half-set-up
        _fail(err_fd, stage, 0, f"{type(exc).__name__}: {exc}")


def _install_filter(
    libc: ctypes.CDLL,
    err_fd: int,
    machine: str,
    trace_program: SockFprog,
    notify_program: SockFprog,
    listens: Listens | None,
) -> None:
    """Install the filter and tell the tracer how it will hear of calls:
    with a seccomp listener where the kernel gives one (its fd goes to the
    tracer, this process keeps none), else with ptrace stops alone. On a
    listener the tracer lets the app go after its exec, so PTRACE_O_EXITKILL
    no longer ties the app to it: the parent-death signal does (for the
    app's first process; the sensor is PID 1, so the rest end with it)."""
    listener, flags = -1, 0
    if listens is not None:
        seccomp = SYSCALL_NUMBERS[MACHINES[machine].abis[0]]["seccomp"]
        killable = SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
        tried = (killable,) if listens is Listens.KILLABLE else ()
        for flags in (*tried, SECCOMP_FILTER_FLAG_NEW_LISTENER):  # EINVAL: Linux < 5.19
            listener = libc.syscall(
                ctypes.c_long(seccomp),
                ctypes.c_long(SECCOMP_SET_MODE_FILTER),
                ctypes.c_long(flags),
                ctypes.c_void_p(ctypes.addressof(notify_program)),
            )
            if listener >= 0:
                break
    if listener < 0:
        address = ctypes.addressof(trace_program)
        if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, address, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")
        os.write(err_fd, LAUNCHER_PTRACED)
        return
    channel = socket.socket(fileno=err_fd)
    try:
        said = (
            LAUNCHER_LISTENS_KILLABLE
            if flags & SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
            else LAUNCHER_LISTENS
        )
        socket.send_fds(channel, [said], [listener])
    finally:
        channel.detach()
        os.close(listener)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def package_root() -> str:
    """The sys.path entry that holds the slimmer package."""
    here = os.path.abspath(__file__)  # slimmer/sensor/syscalls/launcher.py
    for _ in range(4):
        here = os.path.dirname(here)
    return here


def interpreter_command() -> list[str]:
    """How to start this interpreter again. The sensor runs through an
    explicit loader (`ld.so --library-path DIR python3`); then
    /proc/self/exe is the loader and /proc/self/cmdline holds the prefix."""
    executable = sys.executable
    try:
        exe = os.readlink("/proc/self/exe")
        with open("/proc/self/cmdline", "rb") as handle:
            cmdline = [os.fsdecode(a) for a in handle.read().split(b"\0")]
    except OSError:
        return [executable]
    if os.path.realpath(executable) == exe:
        return [executable]
    for index, arg in enumerate(cmdline):
        if arg == executable:
            return cmdline[: index + 1]
    return [executable]
