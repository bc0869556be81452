"""The kernel's numbers the tracer uses (ptrace, prctl, seccomp, classic
BPF, open and *at flags) and the process's own libc through ctypes.

See docs/syscalls.md for how the tracer uses them.
"""

from __future__ import annotations

import ctypes
import signal
import struct

PTRACE_PEEKDATA = 2
PTRACE_CONT = 7
PTRACE_GETREGS = 12
PTRACE_SETREGS = 13
PTRACE_DETACH = 17
PTRACE_SYSCALL = 24
PTRACE_SETOPTIONS = 0x4200
PTRACE_GETEVENTMSG = 0x4201
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_LISTEN = 0x4208
PTRACE_GET_SYSCALL_INFO = 0x420E
PTRACE_SYSCALL_INFO_ENTRY = 1
PTRACE_SYSCALL_INFO_SECCOMP = 3

PTRACE_O_TRACESYSGOOD = 1
PTRACE_O_TRACEFORK = 1 << 1
PTRACE_O_TRACEVFORK = 1 << 2
PTRACE_O_TRACECLONE = 1 << 3
PTRACE_O_TRACEEXEC = 1 << 4
PTRACE_O_TRACESECCOMP = 1 << 7
PTRACE_O_EXITKILL = 1 << 20

PTRACE_EVENT_FORK = 1
PTRACE_EVENT_VFORK = 2
PTRACE_EVENT_CLONE = 3
PTRACE_EVENT_EXEC = 4
PTRACE_EVENT_SECCOMP = 7
PTRACE_EVENT_STOP = 128

# Every tracee has these; TRACEEXEC only until the launcher's exec is done.
TRACE_OPTIONS = (
    PTRACE_O_TRACESYSGOOD
    | PTRACE_O_TRACEFORK
    | PTRACE_O_TRACEVFORK
    | PTRACE_O_TRACECLONE
    | PTRACE_O_TRACESECCOMP
    | PTRACE_O_EXITKILL
)

WALL = 0x40000000  # __WALL: threads and non-SIGCHLD children too
WNOTHREAD = 0x20000000  # __WNOTHREAD: this thread's children and tracees only
SYSCALL_EXIT_STOP = signal.SIGTRAP | 0x80  # with PTRACE_O_TRACESYSGOOD
STOP_SIGNALS = frozenset({signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU})

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_TRACE = 0x7FF00000
SECCOMP_RET_USER_NOTIF = 0x7FC00000
SECCOMP_SET_MODE_FILTER = 1  # seccomp(2)'s operation
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
# once the listener has received a call, the call's wait is killable, no
# longer interruptible by other signals (Linux 5.19)
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 1 << 5
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1
SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP = 1
SECCOMP_IOCTL_NOTIF_RECV = 0xC0502100  # _IOWR('!', 0, struct seccomp_notif)
SECCOMP_IOCTL_NOTIF_SEND = 0xC0182101  # _IOWR('!', 1, struct seccomp_notif_resp)
SECCOMP_IOCTL_NOTIF_SET_FLAGS = 0x40082104  # _IOW('!', 4, __u64)
# SECCOMP_USER_NOTIF_FLAG_CONTINUE is Linux 5.5; without it a notified call
# could only be answered, not let through
NOTIFY_KERNEL = (5, 5)

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_SYMLINK_FOLLOW = 0x400
AT_EMPTY_PATH = 0x1000
O_WRONLY = 0o1
O_RDWR = 0o2
O_CREAT = 0o100
O_TRUNC = 0o1000
O_NOFOLLOW_X86 = 0o400000
O_NOFOLLOW_ARM64 = 0o100000
IN_DONT_FOLLOW = 0x02000000
AF_UNIX = 1

PATH_MAX = 4096
WORD = 8

SYSCALL_INFO = struct.Struct("<B3xIQQQ6QI")  # struct ptrace_syscall_info, the seccomp variant
ENTRY_INFO_SIZE = 80  # the entry variant: no ret_data
REGS_WORDS = 27  # struct user_regs_struct on x86_64
# argument registers in user_regs_struct: rdi rsi rdx r10 r8 r9 / ebx ecx edx esi edi ebp
X86_64_ARG_REGS = (14, 13, 12, 7, 9, 8)
I386_ARG_REGS = (5, 11, 12, 13, 14, 4)
RAX, ORIG_RAX, RIP = 10, 15, 16


def load_libc() -> ctypes.CDLL:
    """The process's own libc (find_library would run the image's tools).
    PyDLL: these calls never block, and keeping the GIL across them spares
    the tracer a wait for the sensor's other threads at every stop."""
    libc = ctypes.PyDLL(None, use_errno=True)
    libc.ptrace.argtypes = (ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p)
    libc.ptrace.restype = ctypes.c_long
    libc.pread.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int64)
    libc.pread.restype = ctypes.c_ssize_t
    libc.prctl.argtypes = (
        ctypes.c_int,
        ctypes.c_ulong,
        ctypes.c_ulong,
        ctypes.c_ulong,
        ctypes.c_ulong,
    )
    libc.prctl.restype = ctypes.c_int
    libc.setfsuid.argtypes = (ctypes.c_uint,)
    libc.setfsgid.argtypes = (ctypes.c_uint,)
    libc.ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
    libc.ioctl.restype = ctypes.c_int
    libc.syscall.restype = ctypes.c_long
    return libc
