"""The tracer: starts the app through the launcher, serves its path calls
(on the seccomp listener, or as ptrace stops) and its ptrace stops, and
records what each call names in a PathLog.

See docs/syscalls.md for the whole design.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import select
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import NoReturn

from slimmer.errors import SlimError
from slimmer.sensor.budget import ByteBudget
from slimmer.sensor.syscalls.abi import (
    MACHINES,
    SPECS,
    Abi,
    Follow,
    OpenFlags,
    PathOperand,
    SyscallSpec,
    call_codes,
    follows,
    notify_supported,
)
from slimmer.sensor.syscalls.bpf import BPF_MAXINSNS, may_return
from slimmer.sensor.syscalls.kernel import (
    AF_UNIX,
    AT_FDCWD,
    I386_ARG_REGS,
    O_CREAT,
    O_RDWR,
    O_TRUNC,
    O_WRONLY,
    PATH_MAX,
    PTRACE_CONT,
    PTRACE_DETACH,
    PTRACE_EVENT_CLONE,
    PTRACE_EVENT_EXEC,
    PTRACE_EVENT_FORK,
    PTRACE_EVENT_SECCOMP,
    PTRACE_EVENT_STOP,
    PTRACE_EVENT_VFORK,
    PTRACE_GET_SYSCALL_INFO,
    PTRACE_GETEVENTMSG,
    PTRACE_GETREGS,
    PTRACE_LISTEN,
    PTRACE_O_TRACEEXEC,
    PTRACE_SEIZE,
    PTRACE_SETOPTIONS,
    PTRACE_SYSCALL,
    PTRACE_SYSCALL_INFO_SECCOMP,
    REGS_WORDS,
    SECCOMP_RET_TRACE,
    STOP_SIGNALS,
    SYSCALL_EXIT_STOP,
    SYSCALL_INFO,
    TRACE_OPTIONS,
    WALL,
    WNOTHREAD,
    X86_64_ARG_REGS,
    load_libc,
)
from slimmer.sensor.syscalls.launcher import (
    BOOT,
    LAUNCHER_LISTENS,
    LAUNCHER_LISTENS_KILLABLE,
    LAUNCHER_PTRACED,
    LAUNCHER_READY,
    LaunchMode,
    LaunchRequest,
    LaunchStage,
    interpreter_command,
    package_root,
    read_all,
)
from slimmer.sensor.syscalls.listener import ChildSignalWakeup, Listener, PidCursor
from slimmer.sensor.syscalls.memory import TraceeMemory
from slimmer.sensor.syscalls.pathlog import (
    PathLog,
    TracerStats,
    clean_absolute,
    exists,
    join_physical,
    program_machine,
)
from slimmer.sensor.syscalls.seize import SetIdSeizer
from slimmer.trace import PathAction


class Refusal(Enum):
    """Why syscall tracing is unavailable."""

    UNSUPPORTED_ARCH = "unsupported-arch"
    OLD_KERNEL = "old-kernel"  # no PTRACE_GET_SYSCALL_INFO and no fallback here
    PTRACE_REFUSED = "ptrace-refused"
    SECCOMP_REFUSED = "seccomp-refused"
    LAUNCHER_FAILED = "launcher-failed"


OLD_KERNEL_DETAIL = "the kernel has no PTRACE_GET_SYSCALL_INFO (Linux < 5.3)"


class TracingUnavailable(SlimError):
    """ptrace or seccomp cannot be used here; trace with inotify alone."""

    def __init__(self, refusal: Refusal, detail: str) -> None:
        super().__init__(
            f"syscall tracing is unavailable: {detail}",
            "the trace falls back to inotify: stat-only and failed lookups are not seen",
        )
        self.refusal = refusal
        self.detail = detail


@dataclass(frozen=True)
class TracingSupport:
    available: bool
    refusal: Refusal | None = None
    detail: str = ""


# the names of the calls the fast path knows (see _known_call), at most
KNOWN_NAME_BYTES = 16 * 1024 * 1024


@dataclass
class _Launch:
    popen: subprocess.Popen[bytes]
    err_read: int
    request_write: int
    traced_calls: int = 0


class SyscallTracer:
    """Starts an app under ptrace + seccomp and records the paths its
    process tree names. Every method must run on the thread that called
    `launch` (ptrace requests come from the tracer thread).

    `use_syscall_info=False` reads registers as on kernels before 5.3;
    `use_proc_mem=False` reads memory only with PTRACE_PEEKDATA, as where
    /proc/<tid>/mem is refused; `use_notify=False` takes every path call
    as a ptrace stop, as on kernels before 5.5; `killable_waits=False`
    keeps a call the listener received interruptible, as before 5.19. All
    are the fallbacks, for tests and diagnosis."""

    def __init__(
        self,
        log: PathLog | None = None,
        interpreter: Sequence[str] | None = None,
        *,
        use_syscall_info: bool = True,
        use_proc_mem: bool = True,
        use_notify: bool = True,
        killable_waits: bool = True,
    ) -> None:
        self.log = log if log is not None else PathLog()
        self.interpreter = list(interpreter) if interpreter else interpreter_command()
        self.machine = os.uname().machine
        support = MACHINES.get(self.machine)
        if support is None:
            raise TracingUnavailable(
                Refusal.UNSUPPORTED_ARCH, f"no syscall tables for {self.machine}"
            )
        self.support = support
        self.stats = TracerStats()
        self._libc = load_libc()
        self._use_info = use_syscall_info
        self._use_notify = use_notify and notify_supported(os.uname().release)
        self._killable_waits = killable_waits
        self._codes = call_codes(self.machine)
        self._listener: Listener | None = None
        self._cursor: PidCursor | None = None  # with the listener
        self._wakeup: ChildSignalWakeup | None = None  # with the listener
        # (code, flags, absolute name) of notified calls already recorded
        self._known: set[tuple[int, int, bytes]] = set()
        self._known_room = ByteBudget(KNOWN_NAME_BYTES)
        self._info = ctypes.create_string_buffer(128)
        self._regs = (ctypes.c_ulonglong * REGS_WORDS)()
        self._message = ctypes.c_ulong()
        self._memory = TraceeMemory(
            self._libc, self.stats, self._may_keep, use_proc_mem=use_proc_mem
        )
        self._seizer = SetIdSeizer(self._libc, self.stats, self._memory.ids_changed)
        self._cwd: dict[int, bytes] = {}  # tid -> its cwd (ptrace stops alone)
        self._root: dict[int, bytes] = {}  # tid -> its root (after a chroot)
        self._in_exit: set[int] = set()  # resumed to a chdir's syscall-exit stop
        self._chrooted = False
        self._launch: _Launch | None = None
        self._ready: _Launch | None = None  # a launcher prepared, waiting for its request
        self._o_nofollow = support.o_nofollow

    # -- starting ------------------------------------------------------------

    def prepare(self) -> None:
        """Start the launcher and seize it; return once it has loaded all its
        code, so the sensor may remove its own files before the app runs.
        `launch` then only sends the request. Raises TracingUnavailable."""
        if self._ready is None:
            self._ready = self._start_launcher()

    def launch(self, request: LaunchRequest) -> int:
        """Start the app traced; returns its pid once it is exec'd. Raises
        TracingUnavailable (nothing of the app ran) or OSError (the app
        could not be started: chdir, user, exec), as Popen would."""
        launch = self._spawn(request)
        pid = launch.popen.pid
        self._await_filter(launch)
        while True:
            status = self._await_launcher(pid)
            # Popen returns once the launcher's own exec closed its pipe, which
            # may be before that exec is reported: the app's exec is the one
            # after the first traced call (the filter comes just before it).
            exec_event = os.WIFSTOPPED(status) and status >> 16 == PTRACE_EVENT_EXEC
            if exec_event and launch.traced_calls:
                if self._listener is not None:
                    # the filter follows the tree: let the app go
                    self._ptrace(PTRACE_DETACH, pid, 0, 0)
                    self._listener.watch_exit(pid)
                else:
                    self._ptrace(PTRACE_SETOPTIONS, pid, 0, TRACE_OPTIONS)
                    self._ptrace(PTRACE_CONT, pid, 0, 0)
                break
            if not os.WIFSTOPPED(status):
                launch.popen.returncode = status
                self._launch_failed(launch, status)
            self._dispatch(pid, status)
            if launch.traced_calls and not self._can_decode():
                self._abandon(launch)
        read_all(launch.err_read)  # EOF: the exec closed the launcher's end
        os.close(launch.err_read)
        # The tracer reaps the app; the Popen must never wait for it.
        launch.popen.returncode = 0
        self._launch = None
        return pid

    def probe(self, uid: int | None = None, gid: int | None = None) -> None:
        """Run the launcher in probe mode: it installs the filter, makes one
        traced call and exits 0. Raises TracingUnavailable if anything fails."""
        request = LaunchRequest("", (), (), "/", uid, gid, None, LaunchMode.PROBE)
        launch = self._spawn(request)
        pid = launch.popen.pid
        self._await_filter(launch)
        while True:
            status = self._await_launcher(pid)
            if not os.WIFSTOPPED(status):
                launch.popen.returncode = status
                break
            self._dispatch(pid, status)
        if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
            self._launch_failed(launch, status)
        os.close(launch.err_read)
        self._launch = None
        if not self._can_decode():
            raise TracingUnavailable(Refusal.OLD_KERNEL, OLD_KERNEL_DETAIL)
        if launch.traced_calls == 0:
            raise TracingUnavailable(Refusal.SECCOMP_REFUSED, "the filter reported no call")

    def _await_launcher(self, pid: int) -> int:
        """The launcher's next wait status; its calls on the listener are
        served meanwhile (its exec is one)."""
        listener = self._listener
        if listener is None:
            return os.waitpid(pid, WALL)[1]
        while True:
            waited, status = os.waitpid(pid, WALL | os.WNOHANG)
            if waited:
                return status
            self._serve(listener, self._wait_ms())

    def _can_decode(self) -> bool:
        """Whether the tracer can read a call's arguments on this kernel."""
        return self._use_info or self.support.regs_fallback

    def _abandon(self, launch: _Launch) -> NoReturn:
        """Kill the launcher before it execs the app: the tracer could not
        read what it calls, so the app must run untraced."""
        launch.popen.kill()
        _, status = os.waitpid(launch.popen.pid, WALL)
        while os.WIFSTOPPED(status):  # a stop that was pending when it was killed
            _, status = os.waitpid(launch.popen.pid, WALL)
        launch.popen.returncode = status
        os.close(launch.err_read)
        self._launch = None
        raise TracingUnavailable(Refusal.OLD_KERNEL, OLD_KERNEL_DETAIL)

    def _spawn(self, request: LaunchRequest) -> _Launch:
        """The prepared launcher (or a new one), sent the request."""
        launch, self._ready = self._ready or self._start_launcher(), None
        self._launch = launch
        try:
            wire = replace(
                request, notify=self._use_notify, killable=self._killable_waits
            ).to_wire()
            while wire:
                wire = wire[os.write(launch.request_write, wire) :]
        finally:
            os.close(launch.request_write)
        return launch

    def _start_launcher(self) -> _Launch:
        """Start the launcher, wait until it is ready, seize it."""
        request_read, request_write = os.pipe()
        # a socket, not a pipe: the seccomp listener comes back through it
        err_read, err_write = (end.detach() for end in socket.socketpair())
        try:
            popen = subprocess.Popen(
                [
                    *self.interpreter,
                    "-I",
                    "-S",
                    "-B",
                    "-c",
                    BOOT,
                    package_root(),
                    str(request_read),
                    str(err_write),
                ],
                env={},
                cwd="/",
                pass_fds=(request_read, err_write),
                close_fds=True,
                restore_signals=True,
            )
        except OSError as exc:
            for fd in (request_write, err_read):
                os.close(fd)
            raise TracingUnavailable(
                Refusal.LAUNCHER_FAILED, f"cannot start the launcher: {exc}"
            ) from exc
        finally:
            os.close(request_read)
            os.close(err_write)
        launch = _Launch(popen, err_read, request_write)
        self._await_ready(launch)
        # Seized only now: the sensor is not dumpable, and neither is its
        # child until the exec has made it so, a moment after Popen returns
        # (the kernel closes CLOEXEC descriptors first). Ready, it waits for
        # its request, which comes once it is seized.
        options = TRACE_OPTIONS | PTRACE_O_TRACEEXEC
        if self._libc.ptrace(PTRACE_SEIZE, popen.pid, 0, options) != 0:
            number = ctypes.get_errno()
            os.close(request_write)
            os.close(err_read)
            popen.kill()
            popen.wait()
            raise TracingUnavailable(Refusal.PTRACE_REFUSED, f"PTRACE_SEIZE: {os.strerror(number)}")
        return launch

    def _await_ready(self, launch: _Launch) -> None:
        """Wait until the launcher says it is ready (its code is loaded)."""
        pid = launch.popen.pid
        ended = self._serve_launcher_until_it_writes(launch)
        if ended is not None:
            launch.popen.returncode = ended
            os.close(launch.request_write)
            self._launch_failed(launch, ended)
        if os.read(launch.err_read, len(LAUNCHER_READY)) != LAUNCHER_READY:
            os.close(launch.request_write)
            _, status = os.waitpid(pid, WALL)
            launch.popen.returncode = status
            self._launch_failed(launch, status)

    def _serve_launcher_until_it_writes(self, launch: _Launch) -> int | None:
        """Serve the seized launcher's stops (a signal it gets meanwhile)
        until its error socket has something to read; its exit status
        instead if it ended first (reaped: the caller must use it)."""
        pid = launch.popen.pid
        while not select.select([launch.err_read], [], [], 0.05)[0]:
            waited, status = os.waitpid(pid, WALL | os.WNOHANG)
            if waited and not os.WIFSTOPPED(status):
                return status
            if waited:
                self._dispatch(pid, status)
        return None

    def _await_filter(self, launch: _Launch) -> None:
        """Serve the launcher's stops until its filter is in place (or it
        failed: its report stays for _launch_failed). A listener it sent
        is served from then on."""
        ended = self._serve_launcher_until_it_writes(launch)
        if ended is not None:
            launch.popen.returncode = ended
            self._launch_failed(launch, ended)
        channel = socket.socket(fileno=launch.err_read)
        try:
            said = channel.recv(1, socket.MSG_PEEK)
            if said not in (LAUNCHER_LISTENS, LAUNCHER_LISTENS_KILLABLE, LAUNCHER_PTRACED):
                return  # a failure report, or EOF
            message, fds, _flags, _address = socket.recv_fds(channel, 1, 1)
        finally:
            channel.detach()
        for fd in fds:  # no process the sensor starts may inherit the listener
            os.set_inheritable(fd, False)
        if message in (LAUNCHER_LISTENS, LAUNCHER_LISTENS_KILLABLE) and fds:
            if message == LAUNCHER_LISTENS_KILLABLE:
                self._seizer.calls_wait_killable()
            self._listener = Listener(fds[0], self._libc)
            self._cursor = PidCursor()
            self._wakeup = ChildSignalWakeup.install()
            if self._wakeup is not None:
                self._listener.watch_wakeups(self._wakeup.read_fd)

    def _launch_failed(self, launch: _Launch, status: int) -> NoReturn:
        """Raise what the launcher reported before it ended."""
        report = read_all(launch.err_read)
        os.close(launch.err_read)
        self._launch = None
        try:
            failure = json.loads(report)
            stage = LaunchStage(failure["stage"])
            number = int(failure["errno"])
            message = str(failure["message"])
        except (ValueError, KeyError, TypeError):
            raise TracingUnavailable(
                Refusal.LAUNCHER_FAILED,
                f"the launcher ended with status {status:#x}: {report[-300:]!r}",
            ) from None
        if stage in (LaunchStage.NO_NEW_PRIVS, LaunchStage.SECCOMP, LaunchStage.TRACED_CALL):
            raise TracingUnavailable(Refusal.SECCOMP_REFUSED, f"{stage.value}: {message}")
        if stage is LaunchStage.REQUEST:
            raise TracingUnavailable(Refusal.LAUNCHER_FAILED, f"{stage.value}: {message}")
        raise OSError(number, f"{stage.value}: {message}")

    # -- the loop --------------------------------------------------------------

    def wait_any(self, block: bool = True) -> tuple[int, int] | None:
        """Serve path calls and ptrace stops until a child of the tracer (or
        a traced thread) ends; return its pid and raw status. Without
        `block`, None when nothing is pending. ChildProcessError when no
        child is left."""
        listener = self._listener
        while True:
            hang = block and listener is None
            # __WNOTHREAD: a child the sensor's other threads started is theirs
            pid, status = os.waitpid(-1, WALL | WNOTHREAD | (0 if hang else os.WNOHANG))
            if pid and os.WIFSTOPPED(status):
                self._dispatch(pid, status)
                continue
            if pid:
                self._forget(pid)
                return pid, status
            if listener is None:
                return None
            served = self._serve(listener, self._wait_ms() if block else 0)
            if not block and not served:
                return None

    def _serve(self, listener: Listener, timeout_ms: int) -> int:
        served = listener.serve(timeout_ms, self._on_notification)
        if not served:
            self._sample_pid_cursor()  # also while no call comes
        return served

    def _sample_pid_cursor(self) -> None:
        if self._cursor is not None and self._cursor.wrapped():
            self._forget_processes()

    def _may_keep(self, tid: int) -> bool:
        """Whether what is learnt of `tid` may be kept for its next call
        (with ptrace stops alone its exit is seen; on a listener, see
        PidCursor)."""
        return self._cursor is None or self._cursor.settled(tid)

    def _wait_ms(self) -> int:
        """How long the loop may wait on the listener before it looks for
        ptrace stops and ended children again, and samples the pid cursor.
        Calls and the app's end wake it, and so does SIGCHLD where the
        wakeup is installed; elsewhere it looks every millisecond while it
        has tracees."""
        if self._wakeup is None and (self._seizer.any_seized() or self._launch is not None):
            return 1
        return self._cursor.interval_ms if self._cursor is not None else 50

    def _on_notification(self, tid: int, number: int, arch: int, args: tuple[int, ...]) -> bool:
        """A path call waits on the listener: record it. Whether to let it
        run now: not a set*id of a process the tracer seized for it."""
        self.stats.notifications += 1
        if self._launch is not None:
            self._launch.traced_calls += 1
        self._sample_pid_cursor()
        code = self._codes.get((arch, number))
        if code is None:
            return True
        try:
            known = self._known_call(tid, code, args)
            if known is not True:
                spec = self._observe_call(tid, code, args)
                if known is not None and self._known_room.take(len(known[2])):
                    self._known.add(known)
                if spec.changes_ids and self._seizer.seize(tid):
                    return False  # the call restarts under ptrace
        except (OSError, ValueError, IndexError):
            self.log.unresolved += 1  # never leave the call waiting
        return True

    def _known_call(
        self, tid: int, code: int, args: tuple[int, ...]
    ) -> tuple[int, int, bytes] | bool | None:
        """The fast path: True when the call repeats one already recorded
        (the same call and flags with the same absolute name: the same
        path, action and follow); else the key to remember it by, or None
        where no key tells (relative names, execs, several names)."""
        spec = SPECS[code & 0xFF]
        if len(spec.operands) != 1 or spec.sockaddr or spec.opens is OpenFlags.HOW:
            return None
        operand = spec.operands[0]
        if operand.action is PathAction.EXEC or self._chrooted:
            return None
        name = self._memory.read_cstring(tid, args[operand.path_arg])
        if not name or name[0] != 0x2F:  # "/"
            return None
        flags = args[spec.flags_arg] & 0xFFFFFFFF if spec.flags_arg is not None else 0
        key = (code, flags, name)
        return True if key in self._known else key

    def _dispatch(self, pid: int, status: int) -> None:
        self.stats.events += 1
        event = status >> 16
        sig = (status >> 8) & 0xFF
        if event == PTRACE_EVENT_SECCOMP:
            self._ptrace(self._on_seccomp(pid), pid, 0, 0)
        elif sig == SYSCALL_EXIT_STOP and event == 0:
            self._ptrace(self._on_syscall_stop(pid), pid, 0, 0)
        elif event in (PTRACE_EVENT_FORK, PTRACE_EVENT_VFORK, PTRACE_EVENT_CLONE):
            self._on_new_process(pid)
            self._ptrace(PTRACE_CONT, pid, 0, 0)
        elif event == PTRACE_EVENT_STOP:
            # a group-stop stays a stop (and SIGCONT still wakes it); the
            # trap after a set*id the seizer let run is its; a new child's
            # first stop, a notification or another PTRACE_INTERRUPT's trap
            # only needs a restart
            if sig in STOP_SIGNALS:
                request = PTRACE_LISTEN
            elif self._seizer.awaits_trap(pid):
                request = self._seizer.on_trap(pid)
            else:
                request = self._resume(pid)
            self._ptrace(request, pid, 0, 0)
        elif event == PTRACE_EVENT_EXEC and self._seizer.seized(pid):
            # dumpable again (as its user): the listener is enough for it now
            self._forget(pid)
            self._ptrace(PTRACE_DETACH, pid, 0, 0)
        elif event != 0:
            self._ptrace(PTRACE_CONT, pid, 0, 0)
        else:  # signal-delivery-stop: deliver it
            self._ptrace(self._resume(pid), pid, 0, sig)

    def _resume(self, tid: int) -> int:
        """How to restart a tracee: to its next syscall stop while the
        tracer is at work on its set*id, else to run on."""
        return PTRACE_SYSCALL if self._seizer.at_work(tid) else PTRACE_CONT

    def _ptrace(self, request: int, pid: int, addr: int, data: int) -> None:
        # ESRCH: the tracee died meanwhile (SIGKILL); waitpid will say so
        self._libc.ptrace(request, pid, addr, data)

    def _forget(self, tid: int) -> None:
        self._memory.forget(tid)
        self._seizer.forget(tid)
        self._cwd.pop(tid, None)
        self._root.pop(tid, None)
        self._in_exit.discard(tid)

    def _forget_processes(self) -> None:
        """The pid cursor wrapped: any tid may name another process now."""
        self._memory.forget_all()

    def _forget_places(self) -> None:
        self._cwd.clear()
        self._root.clear()

    def _on_new_process(self, parent: int) -> None:
        if self._libc.ptrace(PTRACE_GETEVENTMSG, parent, 0, ctypes.addressof(self._message)):
            return
        child = self._message.value
        # a new process starts where its parent is, as the same user (an exec
        # changes neither: set-id bits are ignored under the tracer); a
        # reused tid forgets what it was
        for table in (self._cwd, self._root):
            if parent in table:
                table[child] = table[parent]
            else:
                table.pop(child, None)
        self._memory.inherit(parent, child)
        self._seizer.inherit(parent, child)
        self._in_exit.discard(child)

    # -- a traced call -------------------------------------------------------------

    def _syscall_args(self, tid: int) -> tuple[int, tuple[int, ...]] | None:
        """The filter's code and the six arguments, or None."""
        if self._use_info:
            size = self._libc.ptrace(
                PTRACE_GET_SYSCALL_INFO, tid, len(self._info), ctypes.addressof(self._info)
            )
            if size >= SYSCALL_INFO.size:
                op, _arch, _ip, _sp, _nr, *rest = SYSCALL_INFO.unpack_from(self._info)
                if op != PTRACE_SYSCALL_INFO_SECCOMP:
                    return None
                return rest[6], tuple(rest[:6])
            if size < 0 and ctypes.get_errno() == errno.ESRCH:
                return None
            self._use_info = False  # Linux < 5.3
        return self._syscall_args_from_regs(tid)

    def _syscall_args_from_regs(self, tid: int) -> tuple[int, tuple[int, ...]] | None:
        if not self.support.regs_fallback:
            return None
        libc = self._libc
        if libc.ptrace(PTRACE_GETEVENTMSG, tid, 0, ctypes.addressof(self._message)):
            return None
        code = self._message.value
        if libc.ptrace(PTRACE_GETREGS, tid, 0, ctypes.addressof(self._regs)):
            return None
        registers = I386_ARG_REGS if code >> 8 == Abi.I386 else X86_64_ARG_REGS
        return code, tuple(self._regs[r] for r in registers)

    def _on_seccomp(self, tid: int) -> int:
        """Record what the call names; the restart request to use."""
        self.stats.stops += 1
        if self._launch is not None:
            self._launch.traced_calls += 1
        got = self._syscall_args(tid)
        if got is None:
            return PTRACE_CONT
        code, args = got
        self._memory.in_stop = True
        try:
            spec = self._observe_call(tid, code, args)
        finally:
            self._memory.in_stop = False
        if self._seizer.injecting(tid):
            return PTRACE_SYSCALL  # a signal handler's call, before the injected prctl
        if spec.changes_ids:
            return self._seizer.to_exit(tid)
        if spec.moves_cwd:
            if spec.name == "chroot":
                self._chrooted = True
            self._in_exit.add(tid)
            return PTRACE_SYSCALL
        return PTRACE_CONT

    def _observe_call(self, tid: int, code: int, args: tuple[int, ...]) -> SyscallSpec:
        """Record the paths of a call the filter sent (`code`: its data)."""
        spec = SPECS[code & 0xFF]
        if spec.sockaddr:
            self._observe_socket(tid, spec, args)
            return spec
        if spec.filter_arg is not None:
            self._observe_filter(tid, Abi(code >> 8), args[spec.filter_arg])
            return spec
        for operand in spec.operands:
            self._observe(tid, spec, operand, args)
        if spec.operands and spec.operands[0].action is PathAction.EXEC:
            # an exec replaces the address space (a vfork child's is its
            # parent's until then) and makes it dumpable: read it afresh
            self._memory.new_address_space(tid)
        return spec

    def _on_syscall_stop(self, tid: int) -> int:
        """A syscall-entry or -exit stop the tracer asked for; the restart."""
        if tid in self._in_exit:  # chdir, fchdir, chroot done
            self._in_exit.discard(tid)
            self._forget_places()
            return PTRACE_CONT
        return self._seizer.on_syscall_stop(tid)

    def _observe(
        self, tid: int, spec: SyscallSpec, operand: PathOperand, args: tuple[int, ...]
    ) -> None:
        address = args[operand.path_arg]
        name = None
        memory = self._memory
        if operand.action is PathAction.EXEC and not memory.has_mem_file(tid) and memory.in_stop:
            # a new process's first call is often its exec, after which its
            # memory must be opened anew: read this one name word by word
            name = memory.peek(tid, address, PATH_MAX, until_nul=True)
        if name is None:
            name = memory.read_cstring(tid, address)
        if name is None and address:
            self.log.unresolved += 1  # the tracee's memory could not be read
        if not name:
            return
        flags = args[spec.flags_arg] & 0xFFFFFFFF if spec.flags_arg is not None else 0
        action = operand.action
        if spec.opens is OpenFlags.HOW:
            how = memory.read_bytes(tid, args[2], 8)
            flags = int.from_bytes(how, "little") if len(how) == 8 else 0
        if spec.opens is not OpenFlags.NONE:
            if flags & O_CREAT:
                action = PathAction.CREATE
            elif flags & (O_WRONLY | O_RDWR | O_TRUNC):
                action = PathAction.WRITE
        follow = follows(operand.follow, flags, self._o_nofollow) or name.endswith(b"/")
        dirfd = _signed32(args[operand.dirfd_arg]) if operand.dirfd_arg is not None else AT_FDCWD
        path = self._absolute(tid, name, dirfd)
        if path is None:
            self.log.unresolved += 1
            return
        self._note(path, action, follow)

    def _note(self, path: bytes, action: PathAction, follow: bool) -> None:
        key = (path, action, follow)
        log = self.log
        if key in log.first:
            return
        log.add(key, exists(path, follow))
        untraced = self.support.untraced_elf_machines
        if action is PathAction.EXEC and untraced and program_machine(path) in untraced:
            log.add_unobserved(path)

    def _observe_filter(self, tid: int, abi: Abi, address: int) -> None:
        """The app installs a seccomp filter of its own. The sensor's filter
        came first and its USER_NOTIF (or TRACE) outranks a TRACE of the
        app's on the calls it holds: the app's own tracer (strace
        --seccomp-bpf, a sandbox's supervisor) would not hear of them. Count
        the filters that may return TRACE (or cannot be read)."""
        pointer = 4 if abi in (Abi.I386, Abi.X32) else 8
        memory = self._memory
        fprog = memory.read_bytes(tid, address, 2 * pointer)  # struct sock_fprog
        program = b""
        if len(fprog) == 2 * pointer:
            length = int.from_bytes(fprog[:2], "little")
            if not 0 < length <= BPF_MAXINSNS:
                return  # the kernel refuses it
            program = memory.read_block(tid, int.from_bytes(fprog[pointer:], "little"), 8 * length)
            if len(program) == 8 * length and not may_return(program, SECCOMP_RET_TRACE):
                return
        self.log.trace_filters += 1

    def _observe_socket(self, tid: int, spec: SyscallSpec, args: tuple[int, ...]) -> None:
        length = min(args[2] & 0xFFFFFFFF, 110)
        if length <= 2:
            return
        address = self._memory.read_bytes(tid, args[1], length)
        if len(address) <= 2 or int.from_bytes(address[:2], "little") != AF_UNIX:
            return
        name = address[2:].split(b"\0", 1)[0]
        if not name:  # abstract or unnamed
            return
        path = self._absolute(tid, name, AT_FDCWD)
        if path is None:
            self.log.unresolved += 1
            return
        operand = spec.operands[0]
        self._note(path, operand.action, operand.follow is Follow.ALWAYS)

    # -- where names are --------------------------------------------------------------

    def _absolute(self, tid: int, name: bytes, dirfd: int) -> bytes | None:
        if name.startswith(b"/"):
            path = clean_absolute(name)
            if self._chrooted:
                root = self._place(tid, "root", self._root)
                if root is None:
                    return None
                if root != b"/":
                    path = root + path if path != b"/" else root
            return path
        if dirfd == AT_FDCWD:
            base = self._place(tid, "cwd", self._cwd)
        else:
            base = self._memory.proc_link(tid, f"fd/{dirfd}")
        if base is None or not base.startswith(b"/"):
            return None
        return join_physical(base, name)

    def _place(self, tid: int, link: str, cache: dict[int, bytes]) -> bytes | None:
        if self._listener is not None:
            # a chdir on the listener has no exit stop to drop the cache at
            return self._memory.proc_link(tid, link)
        known = cache.get(tid)
        if known is None:
            known = self._memory.proc_link(tid, link)
            if known is not None:
                cache[tid] = known
        return known

    def close(self) -> None:
        """Close the tracer's descriptors of tracees' memory and its
        seccomp listeners."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._cursor is not None:
            self._cursor.close()
        if self._wakeup is not None:
            self._wakeup.remove()
            self._wakeup = None
        self._memory.close()


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def probe_support(
    uid: int | None = None,
    gid: int | None = None,
    interpreter: Sequence[str] | None = None,
) -> TracingSupport:
    """Whether ptrace + seccomp tracing works here (for a process that
    drops to uid/gid), and why not. Starts one short launcher process."""
    try:
        tracer = SyscallTracer(PathLog(limit_bytes=1 << 16), interpreter)
    except TracingUnavailable as exc:
        return TracingSupport(False, exc.refusal, exc.detail)
    try:
        tracer.probe(uid, gid)
    except TracingUnavailable as exc:
        return TracingSupport(False, exc.refusal, exc.detail)
    except OSError as exc:
        return TracingSupport(False, Refusal.LAUNCHER_FAILED, str(exc))
    finally:
        tracer.close()
    return TracingSupport(True)
