"""Serving the seccomp listener: path calls wait on it while the tracer
records them; a SIGCHLD wakeup for the ptrace stops served between; the
pid namespace's allocation cursor that tells which per-tid caches still
name the process they were made for.

See docs/syscalls.md ("The listener").
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import struct
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from slimmer.sensor.syscalls.kernel import (
    SECCOMP_IOCTL_NOTIF_RECV,
    SECCOMP_IOCTL_NOTIF_SEND,
    SECCOMP_IOCTL_NOTIF_SET_FLAGS,
    SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP,
    SECCOMP_USER_NOTIF_FLAG_CONTINUE,
)

SERVE_BATCH = 256  # calls served between two looks for ptrace stops
# records a call that waits on the listener (tid, number, arch, arguments);
# whether to let it run now
Answer = Callable[[int, int, int, tuple[int, ...]], bool]
_NOTIF = struct.Struct("<QIIiIQ6Q")  # struct seccomp_notif: id pid flags, seccomp_data
_NOTIF_RESP = struct.Struct("<QqiI")  # struct seccomp_notif_resp: id val error flags


class Listener:
    """A seccomp listener, served on the tracer's thread between its waits
    for ptrace stops (there are few: the processes are not traced). The
    kernel runs the tracer on the CPU of the call that woke it and back
    (Linux >= 6.6; before, every call wakes another CPU)."""

    def __init__(self, fd: int, libc: ctypes.CDLL) -> None:
        self.fd = fd
        self._libc = libc
        self._poller = select.poll()
        self._poller.register(fd, select.POLLIN)
        self._exit_fd = -1
        self._wake_fd = -1
        self._request = ctypes.create_string_buffer(_NOTIF.size)
        self._response = ctypes.create_string_buffer(_NOTIF_RESP.size)
        os.set_blocking(fd, True)
        libc.ioctl(fd, SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP)

    def watch_exit(self, pid: int) -> None:
        """Wake the wait when `pid` ends, not at the next timeout."""
        with contextlib.suppress(OSError):  # no pidfd_open: the timeout does
            self._exit_fd = os.pidfd_open(pid)
            self._poller.register(self._exit_fd, select.POLLIN)

    def watch_wakeups(self, fd: int) -> None:
        """Return from a wait when a byte arrives on `fd` (drained)."""
        self._wake_fd = fd
        self._poller.register(fd, select.POLLIN)

    def serve(self, timeout_ms: int, answer: Answer) -> int:
        """Serve calls until none comes for `timeout_ms`: `answer` records
        each and says whether to let it run now (False: the caller was
        seized, see SyscallTracer). Returns the number served, early when
        the watched process ended, a wakeup came, or after a batch (so the
        caller looks for ptrace stops even where no wakeup tells it)."""
        served = 0
        poll, ready = self._poller.poll, [(self.fd, select.POLLIN)]
        while served < SERVE_BATCH and (events := poll(timeout_ms)):
            if events == ready:  # the common case, first: a call waits to be received
                served += self._serve_one(answer)
                continue
            for fd, happened in events:
                if fd == self._exit_fd:
                    self._unwatch_exit()
                    return served
                if fd == self._wake_fd:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(fd, 512):
                            pass
                    return served
                if happened & select.POLLIN:
                    served += self._serve_one(answer)
                else:  # POLLHUP: no process uses the filter any more
                    self._poller.unregister(fd)
        return served

    def _serve_one(self, answer: Answer) -> int:
        # Until the call is received a signal withdraws it (the caller may
        # see EINTR; once received it waits killable where the kernel can):
        # nothing but the receive comes before it. The buffer (which the
        # kernel wants zeroed) was cleared after the last call.
        request = self._request
        received = self._libc.ioctl(self.fd, SECCOMP_IOCTL_NOTIF_RECV, request) == 0
        if not received:
            ctypes.memset(request, 0, _NOTIF.size)
            return 0  # it went away: a signal interrupted it, or it died
        call_id, tid, _flags, number, arch, _ip, *args = _NOTIF.unpack_from(request)
        ctypes.memset(request, 0, _NOTIF.size)
        let_run = True
        try:
            let_run = answer(tid, number & 0xFFFFFFFF, arch, tuple(args))
        finally:
            if let_run:
                # let the call run as if no filter were there (ENOENT: the
                # caller is gone, nothing to do)
                flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE
                _NOTIF_RESP.pack_into(self._response, 0, call_id, 0, 0, flags)
                self._libc.ioctl(self.fd, SECCOMP_IOCTL_NOTIF_SEND, self._response)
        return 1

    def _unwatch_exit(self) -> None:
        if self._exit_fd >= 0:
            self._poller.unregister(self._exit_fd)
            os.close(self._exit_fd)
            self._exit_fd = -1

    def close(self) -> None:
        self._unwatch_exit()
        os.close(self.fd)


@dataclass
class ChildSignalWakeup:
    """SIGCHLD (a tracee stopped, a child ended) writes a byte that wakes
    the tracer's wait on the listener (signal.set_wakeup_fd): a ptrace stop
    is served at once, not at the next timeout. Only the main thread may
    install it; elsewhere the loop looks for stops every millisecond while
    it has tracees."""

    read_fd: int
    write_fd: int
    previous_handler: Callable[[int, FrameType | None], object] | int | None

    @classmethod
    def install(cls) -> ChildSignalWakeup | None:
        read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
            if previous_fd != -1:  # someone else's: leave it
                signal.set_wakeup_fd(previous_fd)
                raise ValueError("a wakeup fd is set")
            previous_handler = signal.signal(signal.SIGCHLD, _wake_only)
        except ValueError:  # not the main thread
            os.close(read_fd)
            os.close(write_fd)
            return None
        return cls(read_fd, write_fd, previous_handler)

    def remove(self) -> None:
        with contextlib.suppress(ValueError, TypeError):
            signal.signal(signal.SIGCHLD, self.previous_handler)
            signal.set_wakeup_fd(-1)
        os.close(self.read_fd)
        os.close(self.write_fd)


def _wake_only(_number: int, _frame: FrameType | None) -> None:
    """The wakeup byte is the whole point of this handler."""


class PidCursor:
    """Where the pid namespace allocates next (/proc/sys/kernel/ns_last_pid).
    On a listener the tracer hears of no exits, so a tid it cached (the
    tracee's memory, its ids) may belong to a new process once the pid is
    reused. Pids are handed out in increasing order and wrap at pid_max: a
    tid at or below the cursor names the process it did when it was cached
    until the cursor wraps; one above it may be reused any time."""

    def __init__(self) -> None:
        self.last = -1
        self.fd = -1
        with contextlib.suppress(OSError, ValueError):
            self.fd = os.open("/proc/sys/kernel/ns_last_pid", os.O_RDONLY | os.O_CLOEXEC)
            self.last = int(os.pread(self.fd, 32, 0))
        pid_max = 1 << 22
        with contextlib.suppress(OSError, ValueError), open("/proc/sys/kernel/pid_max") as handle:
            pid_max = int(handle.read())
        # sampled at least this often: no namespace allocates pid_max pids
        # in less (one per microsecond would be fast), so no wrap is missed
        self.interval_ms = max(5, min(1000, pid_max // 1000))

    def wrapped(self) -> bool:
        """Read the cursor; whether it wrapped since the last reading."""
        if self.fd < 0:
            return False
        try:
            now = int(os.pread(self.fd, 32, 0))
        except (OSError, ValueError):
            self.close()
            return True
        wrapped, self.last = now < self.last, now
        return wrapped

    def settled(self, tid: int) -> bool:
        """Whether a cache entry for `tid` stays valid until the next wrap."""
        return 0 <= tid <= self.last

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.last = -1  # nothing is settled any more
