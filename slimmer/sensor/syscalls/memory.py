"""Reading a tracee: its memory (/proc/<tid>/mem, else PTRACE_PEEKDATA in a
ptrace stop) and its /proc links (cwd, fd/N), as its own uid where the
kernel asks for that.

See docs/syscalls.md ("Reading the tracee").
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from typing import TypeVar

from slimmer.sensor.syscalls.kernel import PATH_MAX, PTRACE_PEEKDATA, WORD
from slimmer.sensor.syscalls.pathlog import TracerStats

_T = TypeVar("_T")

MAX_MEM_FDS = 512  # open /proc/<tid>/mem files kept; all are closed beyond


class TraceeMemory:
    """The tracer's reads of its tracees, with what it keeps per tid: an
    open /proc/<tid>/mem, the tid's uid and gid, and whether its memory
    file was refused. `may_keep(tid)` says whether what is learnt of a tid
    may be kept for its next call (see PidCursor). Set `in_stop` while the
    tracee is in a ptrace stop: only then may PTRACE_PEEKDATA read it."""

    def __init__(
        self,
        libc: ctypes.CDLL,
        stats: TracerStats,
        may_keep: Callable[[int], bool],
        *,
        use_proc_mem: bool = True,
    ) -> None:
        self.in_stop = False
        self._libc = libc
        self._stats = stats
        self._may_keep = may_keep
        self._use_proc_mem = use_proc_mem
        self._own_ids = (os.getuid(), os.getgid())
        self._buffer = ctypes.create_string_buffer(PATH_MAX + 1)
        self._mem: dict[int, int] = {}  # tid -> open /proc/<tid>/mem
        self._peek_only: set[int] = set()  # /proc/<tid>/mem refused
        self._ids: dict[int, tuple[int, int]] = {}  # tid -> its uid, gid

    # -- what is kept per tid -------------------------------------------------

    def has_mem_file(self, tid: int) -> bool:
        return tid in self._mem

    def new_address_space(self, tid: int) -> None:
        """An exec replaced the tid's memory (and made it dumpable)."""
        self._close_mem(tid)
        self._peek_only.discard(tid)

    def ids_changed(self, tid: int) -> None:
        self._ids.pop(tid, None)

    def inherit(self, parent: int, child: int) -> None:
        """A new process runs as its parent's user; a reused tid forgets what it was."""
        if parent in self._ids:
            self._ids[child] = self._ids[parent]
        else:
            self._ids.pop(child, None)
        self._close_mem(child)
        self._peek_only.discard(child)

    def forget(self, tid: int) -> None:
        self._close_mem(tid)
        self._ids.pop(tid, None)
        self._peek_only.discard(tid)

    def forget_all(self) -> None:
        """Any tid may name another process now."""
        for tid in list(self._mem):
            self._close_mem(tid)
        self._ids.clear()
        self._peek_only.clear()

    def close(self) -> None:
        for tid in list(self._mem):
            self._close_mem(tid)

    # -- /proc links ------------------------------------------------------------

    def proc_link(self, tid: int, link: str) -> bytes | None:
        """readlink /proc/<tid>/<link>."""
        self._stats.proc_reads += 1
        return self._in_proc(tid, os.readlink, f"/proc/{tid}/{link}".encode())

    def _in_proc(self, tid: int, call: Callable[[bytes], _T], path: bytes) -> _T | None:
        """`call(path)` for a /proc/<tid> file. The kernel checks it against
        the caller's fs ids: for a tracee of another uid (and no
        CAP_SYS_PTRACE) the tracer's fs ids are set to the tracee's for the
        moment. The tracee's ids are cached (a child inherits its parent's,
        a set*id forgets them). None when it cannot be done."""
        ids = self._ids.get(tid)
        if ids is None or ids == self._own_ids:
            try:
                return call(path)
            except PermissionError:
                pass
            except OSError:
                return None
        for known in (True, False):
            if ids is None or not known:
                fresh = proc_ids(tid)
                if fresh is None or fresh == ids:
                    return None
                ids = self._ids[tid] = fresh
            self._stats.fsuid_switches += 1
            libc = self._libc
            old_gid = libc.setfsgid(ids[1])
            old_uid = libc.setfsuid(ids[0])
            try:
                return call(path)
            except PermissionError:
                continue  # the cached ids were stale: read them afresh
            except OSError:
                return None
            finally:
                libc.setfsuid(old_uid)
                libc.setfsgid(old_gid)
        return None

    # -- memory --------------------------------------------------------------------

    def read_cstring(self, tid: int, address: int) -> bytes | None:
        if address == 0:
            return None
        count = self._mem_read(tid, address, PATH_MAX)
        if count < 0:
            return self.peek(tid, address, PATH_MAX, until_nul=True)
        value = self._buffer.value
        if len(value) < count:
            return value
        if count == PATH_MAX:
            return None  # longer than PATH_MAX: the kernel refuses it too
        more = self.peek(tid, address + count, PATH_MAX - count, until_nul=True)
        return None if more is None else value[:count] + more

    def read_bytes(self, tid: int, address: int, size: int) -> bytes:
        if address == 0:
            return b""
        count = self._mem_read(tid, address, size)
        if count < 0:
            return self.peek(tid, address, size, until_nul=False) or b""
        return self._buffer.raw[:count]

    def read_block(self, tid: int, address: int, size: int) -> bytes:
        """Up to `size` bytes (fewer where the tracee's mapping ends)."""
        out = bytearray()
        while len(out) < size:
            want = min(size - len(out), PATH_MAX)
            chunk = self.read_bytes(tid, address + len(out), want)
            out += chunk
            if len(chunk) < want:
                break
        return bytes(out)

    def _mem_read(self, tid: int, address: int, size: int) -> int:
        """Read into the buffer through /proc/<tid>/mem: the count, or -1
        where that file cannot be used (then PEEKDATA)."""
        for _ in range(2):
            fd = self._mem_fd(tid)
            if fd is None:
                return -1
            count = self._libc.pread(fd, self._buffer, size, address)
            if not self._may_keep(tid):
                self._close_mem(tid)
            if count != 0:
                return count  # -1 (EIO) for an address the tracee has not mapped
            self._close_mem(tid)  # 0: the address space went away (exit)
        return -1

    def _mem_fd(self, tid: int) -> int | None:
        fd = self._mem.get(tid)
        if fd is not None or tid in self._peek_only or not self._use_proc_mem:
            return fd
        self._stats.mem_opens += 1
        fd = self._in_proc(tid, _open_read_only, f"/proc/{tid}/mem".encode())
        if fd is None:
            if self._may_keep(tid):
                self._peek_only.add(tid)
            return None
        if len(self._mem) >= MAX_MEM_FDS:
            for other in list(self._mem):
                self._close_mem(other)
        self._mem[tid] = fd
        return fd

    def _close_mem(self, tid: int) -> None:
        fd = self._mem.pop(tid, None)
        if fd is not None:
            os.close(fd)

    def peek(self, tid: int, address: int, size: int, *, until_nul: bool) -> bytes | None:
        """Read with PTRACE_PEEKDATA, one aligned word at a time (only a
        tracee in a ptrace stop can be read so)."""
        if not self.in_stop:
            return None
        self._stats.peek_reads += 1
        libc = self._libc
        start = address - address % WORD
        skip = address - start
        out = bytearray()
        word_address = start
        while len(out) < size:
            ctypes.set_errno(0)
            word = libc.ptrace(PTRACE_PEEKDATA, tid, word_address, 0)
            if word == -1 and ctypes.get_errno():
                return None if until_nul else bytes(out)
            chunk = (word & 0xFFFFFFFFFFFFFFFF).to_bytes(WORD, "little")[skip:]
            skip = 0
            if until_nul and b"\0" in chunk:
                out += chunk[: chunk.index(b"\0")]
                return bytes(out)
            out += chunk
            word_address += WORD
        return None if until_nul else bytes(out[:size])


def _open_read_only(path: bytes) -> int:
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def proc_ids(tid: int) -> tuple[int, int] | None:
    """The uid and gid of a thread when its real, effective and saved ids
    agree (the only case where the fs-uid trick can help)."""
    try:
        with open(f"/proc/{tid}/status", "rb") as handle:
            text = handle.read()
    except OSError:
        return None
    ids: dict[bytes, list[bytes]] = {}
    for line in text.splitlines():
        key, _, value = line.partition(b":")
        if key in (b"Uid", b"Gid"):
            ids[key] = value.split()
    uids, gids = ids.get(b"Uid", []), ids.get(b"Gid", [])
    if len(uids) < 3 or len(gids) < 3 or len(set(uids[:3])) != 1 or len(set(gids[:3])) != 1:
        return None
    return int(uids[0]), int(gids[0])
