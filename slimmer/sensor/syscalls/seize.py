"""Processes that change their ids: a root process that drops to another
user without exec'ing (a server's workers) turns non-dumpable, and a
tracer without CAP_SYS_PTRACE could then read neither its memory nor its
/proc links. On x86_64 the tracer makes it run prctl(PR_SET_DUMPABLE, 1)
right after its set*id; on a listener it first seizes the process at that
call, while it is still root.

See docs/syscalls.md ("Processes that change their ids").
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass

from slimmer.sensor.syscalls.abi import AUDIT_ARCH_X86_64, X86_64_PRCTL, X86_64_SET_ID_NUMBERS
from slimmer.sensor.syscalls.kernel import (
    ENTRY_INFO_SIZE,
    ORIG_RAX,
    PR_SET_DUMPABLE,
    PTRACE_CONT,
    PTRACE_GET_SYSCALL_INFO,
    PTRACE_GETREGS,
    PTRACE_INTERRUPT,
    PTRACE_O_TRACEEXEC,
    PTRACE_SEIZE,
    PTRACE_SETREGS,
    PTRACE_SYSCALL,
    PTRACE_SYSCALL_INFO_ENTRY,
    RAX,
    REGS_WORDS,
    RIP,
    SYSCALL_INFO,
    TRACE_OPTIONS,
    X86_64_ARG_REGS,
)
from slimmer.sensor.syscalls.pathlog import TracerStats

# syscall stops a process seized at a set*id may make (in a signal handler)
# before the call is restarted; then it runs on without the injection
SET_ID_SEARCH_STOPS = 256


@dataclass
class _Injection:
    """A prctl(PR_SET_DUMPABLE, 1) the tracer made a tracee call."""

    saved_regs: bytes  # the registers at the set*id's exit stop, restored after
    entered: bool = False  # the prctl's entry stop was seen


class SetIdSeizer:
    """The tracer's work on set*id calls, per tid. `ids_changed(tid)` is
    told when a tracee's ids changed (what was cached of them is stale)."""

    def __init__(
        self, libc: ctypes.CDLL, stats: TracerStats, ids_changed: Callable[[int], None]
    ) -> None:
        self._libc = libc
        self._stats = stats
        self._ids_changed = ids_changed
        self._info = ctypes.create_string_buffer(128)
        self._regs = (ctypes.c_ulonglong * REGS_WORDS)()
        self._exit: set[int] = set()  # resumed to a set*id's exit stop
        self._injecting: dict[int, _Injection] = {}
        # on a listener: processes seized at a set*id call (and their children
        # born since), let go at their exec
        self._seized: set[int] = set()
        self._entry: dict[int, int] = {}  # tid -> stops left to find its restart
        self._trap: set[int] = set()  # interrupted, its set*id let run: trap after it
        self._killable = False  # the listener's received calls wait killable

    # -- what the tracer asks ------------------------------------------------------

    def calls_wait_killable(self) -> None:
        """The listener has SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV: a call
        it received can no longer be interrupted (see `seize`)."""
        self._killable = True

    def seized(self, tid: int) -> bool:
        """Whether the tid was seized at a set*id (on a listener)."""
        return tid in self._seized

    def any_seized(self) -> bool:
        return bool(self._seized)

    def at_work(self, tid: int) -> bool:
        """Whether the tid must be resumed to its next syscall stop."""
        return tid in self._injecting or tid in self._entry or tid in self._exit

    def awaits_trap(self, tid: int) -> bool:
        """Whether the tid's next PTRACE_EVENT_STOP is the trap after a set*id."""
        return tid in self._trap

    def injecting(self, tid: int) -> bool:
        return tid in self._injecting

    def inherit(self, parent: int, child: int) -> None:
        """A new process: traced from birth if its parent is seized
        (PTRACE_O_TRACEFORK); a reused tid forgets what it was."""
        if parent in self._seized:
            self._seized.add(child)
        self._exit.discard(child)
        self._injecting.pop(child, None)
        self._trap.discard(child)

    def forget(self, tid: int) -> None:
        self._exit.discard(tid)
        self._injecting.pop(tid, None)
        self._seized.discard(tid)
        self._entry.pop(tid, None)
        self._trap.discard(tid)

    # -- with ptrace stops ------------------------------------------------------------

    def to_exit(self, tid: int) -> int:
        """A set*id's seccomp stop: the restart that reaches its exit stop."""
        self._exit.add(tid)
        return PTRACE_SYSCALL

    # -- on a listener ----------------------------------------------------------------

    def seize(self, tid: int) -> bool:
        """A set*id waits on the listener: a root process dropping its ids
        turns non-dumpable, and then neither its memory nor its /proc links
        could be read (see _inject_dumpable). Seize it (it is still root
        and dumpable) and PTRACE_INTERRUPT it. Where the call's wait is
        killable (it was received), the interrupt waits until the call
        has run and traps right after it, before any other instruction of
        the process: the caller lets the call run and the injection comes
        at that trap (False). Else the interrupt ends the wait: the kernel
        withdraws the notification and the call restarts under ptrace,
        where the tracer sees its exit (True: leave the call unanswered)."""
        busy = tid in self._exit or tid in self._entry or tid in self._injecting
        if busy or tid in self._trap:
            return False  # the restarted call (on to its exit stop), or a handler's
        if tid not in self._seized:
            # it stays seized until it execs: once its ids changed, the
            # tracer could not seize it again for its next set*id
            options = TRACE_OPTIONS | PTRACE_O_TRACEEXEC
            if self._libc.ptrace(PTRACE_SEIZE, tid, 0, options) != 0:
                return False
            self._stats.attaches += 1
            self._seized.add(tid)
        if self._libc.ptrace(PTRACE_INTERRUPT, tid, 0, 0) != 0:
            return False
        if self._killable:
            self._trap.add(tid)
            return False
        self._entry[tid] = SET_ID_SEARCH_STOPS
        return True

    def on_trap(self, tid: int) -> int:
        """The trap right after a set*id let run (killable waits): the
        injection, as at the call's exit stop; the restart."""
        self._trap.discard(tid)
        self._ids_changed(tid)
        return PTRACE_SYSCALL if self._inject_dumpable(tid) else PTRACE_CONT

    # -- syscall stops -------------------------------------------------------------------

    def on_syscall_stop(self, tid: int) -> int:
        """A syscall-entry or -exit stop of the work on a set*id; the restart."""
        stops_left = self._entry.get(tid)
        if stops_left is not None:  # seized at a set*id: is this its restart?
            if self._entering_set_id(tid):
                del self._entry[tid]
                self._exit.add(tid)
                return PTRACE_SYSCALL
            if stops_left <= 0:  # a signal handler that never returned to it
                del self._entry[tid]
                return PTRACE_CONT
            self._entry[tid] = stops_left - 1
            return PTRACE_SYSCALL
        if tid in self._exit:  # set*id done
            self._exit.discard(tid)
            self._ids_changed(tid)
            return PTRACE_SYSCALL if self._inject_dumpable(tid) else PTRACE_CONT
        injection = self._injecting.get(tid)
        if injection is None:
            return PTRACE_CONT
        if not injection.entered:
            # a signal handler may run (and make calls) before the prctl
            injection.entered = self._entering_prctl(tid)
            return PTRACE_SYSCALL
        del self._injecting[tid]
        ctypes.memmove(self._regs, injection.saved_regs, ctypes.sizeof(self._regs))
        self._libc.ptrace(PTRACE_SETREGS, tid, 0, ctypes.addressof(self._regs))
        return PTRACE_CONT

    def _entering_set_id(self, tid: int) -> bool:
        """Whether a syscall stop is the entry to a set*id (x86_64 ABI)."""
        size = self._libc.ptrace(
            PTRACE_GET_SYSCALL_INFO, tid, len(self._info), ctypes.addressof(self._info)
        )
        if size < ENTRY_INFO_SIZE:
            return False
        op, arch, _ip, _sp, number = SYSCALL_INFO.unpack_from(self._info)[:5]
        return (
            op == PTRACE_SYSCALL_INFO_ENTRY
            and arch == AUDIT_ARCH_X86_64
            and number in X86_64_SET_ID_NUMBERS
        )

    def _entering_prctl(self, tid: int) -> bool:
        regs = self._regs
        if self._libc.ptrace(PTRACE_GETREGS, tid, 0, ctypes.addressof(regs)):
            return False
        return regs[ORIG_RAX] == X86_64_PRCTL and regs[X86_64_ARG_REGS[0]] == PR_SET_DUMPABLE

    def _inject_dumpable(self, tid: int) -> bool:
        """At a successful set*id's exit stop: make the tracee call
        prctl(PR_SET_DUMPABLE, 1) by re-running its syscall instruction with
        other registers; they are restored at that call's exit stop. Without
        it the tracer, lacking CAP_SYS_PTRACE, could not read the memory of
        a server's workers that dropped privileges, nor their cwd."""
        libc = self._libc
        if libc.ptrace(PTRACE_GETREGS, tid, 0, ctypes.addressof(self._regs)):
            return False
        regs = self._regs
        if regs[RAX] >= 1 << 63:  # the call failed: nothing changed
            return False
        saved = bytes(regs)
        regs[RAX] = X86_64_PRCTL
        for register, value in zip(X86_64_ARG_REGS, (PR_SET_DUMPABLE, 1, 0, 0, 0, 0), strict=True):
            regs[register] = value
        regs[RIP] -= 2  # back onto the 2-byte `syscall` instruction
        if libc.ptrace(PTRACE_SETREGS, tid, 0, ctypes.addressof(regs)):
            return False
        self._injecting[tid] = _Injection(saved)
        return True
