"""Syscall-level path observation: every path the app's processes name to
the kernel, with ptrace and a seccomp-bpf filter, without privileges.

inotify reports opens, reads and writes of real files; it has no event for
stat(2), access(2), readlink(2), an open that fails with ENOENT, or a
directory symlink the app goes through by name. This module sees those.

How it works
------------
The app's first process is started by a small *launcher*: the sensor's own
interpreter run afresh (`python -I -S -B -c ...`, from subprocess.Popen, so
the fork happens in C and runs no Python before exec). The launcher blocks
reading its request from a pipe; meanwhile the sensor attaches to it with
PTRACE_SEIZE (it is still root and dumpable, so no CAP_SYS_PTRACE is
needed) and then writes the request. The launcher changes to the work
directory, drops to the app's user (setgroups, setgid, setuid, as
subprocess.Popen does for the untraced Supervisor), makes itself dumpable
again (the uid change cleared it, and the tracer must read the exec's
path), restores SIGPIPE and SIGXFSZ to their defaults, sets
PR_SET_NO_NEW_PRIVS, installs the filter and execs the app. The ptrace link
survives the uid change. Its failures come back on a CLOEXEC pipe: before
the filter is in place they mean "no tracing here" (TracingUnavailable,
nothing of the app ran); chdir and exec failures are the app's (OSError,
as Popen raises them).

Why a launcher rather than preexec_fn or code after os.fork(): the sensor
has an inotify reader thread and a sampler thread. Python code between
fork and exec in a multi-threaded process can deadlock on a lock another
thread held at fork time (import lock, logging and io locks, C library
locks). The launcher is a fresh single-threaded process, so it may run any
Python it likes; the price is one interpreter start (a few tens of ms, once
per trace). It also gets a clean environment: the image's LD_PRELOAD or
PYTHON* variables reach only the app, through execve.

The filter (installed with no_new_privs, which needs no capability) returns
SECCOMP_RET_TRACE only for path-taking system calls and ALLOW for all
others, so the app runs at full speed except on those calls. The return
data tells the tracer which call it was (and in which ABI). fstat-like calls
(`newfstatat(fd, "", AT_EMPTY_PATH)`, what glibc's fstat is, statx with
AT_EMPTY_PATH, futimens) are allowed by the filter itself: they name no path.

How the tracer hears of a path call: ptrace stops cost two cross-CPU
wakeups each (tens of microseconds on a VM, where a wakeup of an idle CPU
exits to the hypervisor). So where the kernel can (Linux >= 5.5, for
SECCOMP_USER_NOTIF_FLAG_CONTINUE) the launcher installs the filter with
seccomp(2) and SECCOMP_FILTER_FLAG_NEW_LISTENER: path calls return
USER_NOTIF and wait on the listener, whose fd the launcher passes back over
its error socket (SCM_RIGHTS) and closes. The tracer serves it: poll,
RECV, read the name from /proc/<tid>/mem, record, SEND with FLAG_CONTINUE
so the call runs as if no filter were there.
SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (Linux >= 6.6) makes the kernel run the
tracer on the CPU of the call and back: about 10 us a call instead of 65.
(The app then cannot make a listener of its own: the kernel allows one per
chain.)

On a listener the processes are not traced at all: the filter is inherited
by every child, so it follows the tree by itself, and a process costs no
ptrace stop (a fork event, a new child's first stop and the parent's
SIGCHLD delivery were three cross-CPU round trips each). The tracer lets
the app go (PTRACE_DETACH) once it has exec'd; every call the filter sends,
chdir and set*id included, waits on the listener, for a TRACE without a
tracer would fail the call with ENOSYS. What that costs the tracer:

- it hears of no fork, exec or exit: cwds are not cached (a relative name
  reads /proc/<tid>/cwd, a chdir has no exit stop to drop a cache at), and
  the memory files it keeps per tid are checked against the pid namespace's
  allocation cursor (`_PidCursor`): a tid above it, or any once it wrapped,
  may be a new process;
- a set*id is where a process turns unreadable (below): the tracer seizes
  it there, while it is still root, and interrupts its wait (the kernel
  withdraws the notification and restarts the call); the call's restart is
  then a syscall stop like any, and the injection below runs at its exit.
  Such a process stays seized (with PTRACE_O_TRACEFORK, and so do its
  children: once its ids changed it could not be seized again) until it
  execs;
- a SIGCHLD handler writes to a pipe the tracer polls with the listener
  (signal.set_wakeup_fd), so a seized process's stops are served at once;
  where the tracer is not the main thread it looks every millisecond.

Where seccomp(2) is refused, or the kernel is older, the launcher installs
the all-TRACE filter with prctl, and the tracer follows the tree with
ptrace as described below.

The filter checks the architecture field of every call:

- x86_64 hosts: the x86_64 ABI, the x32 ABI (bit 30 of the number) and the
  i386 ABI (32-bit programs, or `int 0x80` from a 64-bit one) each have
  their own table, so no ABI can name a path unseen;
- aarch64 hosts: the aarch64 ABI;
- any other architecture value (32-bit ARM programs on arm64, say) is
  ALLOWed: the program runs correctly but its paths are not observed. The
  tracer marks such programs when they are exec'd (`unobserved_programs`).
  (A foreign program under binfmt emulation makes native calls: observed.)

With ptrace stops alone the tracer (the sensor's main thread, which must
also own waitpid) follows the whole tree: PTRACE_O_TRACEFORK/VFORK/CLONE
attach every new process and
thread, waitpid(-1, __WALL) sees threads, and every child of the sensor,
traced or not (orphans re-parented to PID 1), is reaped. At each seccomp
stop it reads the call's number and arguments (PTRACE_GET_SYSCALL_INFO,
Linux >= 5.3; on x86_64 it falls back to PTRACE_GETREGS), reads the path
strings from the tracee, and makes relative names absolute with the
process's cwd or the dirfd (readlink of /proc/<tid>/cwd and
/proc/<tid>/fd/<n>).

Reading the tracee: the container's default seccomp profile refuses
process_vm_readv without CAP_SYS_PTRACE, so the tracer opens
/proc/<tid>/mem once per thread and address space (an exec closes it) and
preads a whole string at once. The kernel checks that file (and the /proc
links) against the caller's fs uid: for a tracee of another uid the tracer
sets its own fs uid and gid to the tracee's for the moment of the open or
readlink (a per-thread setting). Where even that is refused it reads with
PTRACE_PEEKDATA, one word per call, which the tracer may use on any
dumpable tracee in a ptrace stop (not on one waiting on the listener: a
name that cannot be read there counts as `unresolved`).

A process that changes its ids without exec'ing (a server's workers after
setuid) turns non-dumpable, and then neither its memory nor its /proc
links are readable by a tracer without CAP_SYS_PTRACE. On x86_64 the set*id
calls are sent to the tracer too: at a successful one's exit stop it makes the
process run prctl(PR_SET_DUMPABLE, 1) (it backs the instruction pointer onto
the `syscall` instruction with prctl's number and arguments in the
registers, and restores every register at that call's exit stop, also
across a signal handler that runs in between). The only visible effect is
the dumpable flag, which an exec of the same program as that user would
have set anyway. Elsewhere such processes' relative names count as
`unresolved` and their absolute ones are unreadable.

The loop keeps the GIL across its ctypes calls (PyDLL: none of them
blocks; the listener is polled before it is received from), so the
sensor's other threads can take it only while the tracer waits in waitpid
or poll, not at each ptrace request.

With ptrace stops alone the cwd is cached per thread and copied to a new
process at fork; chdir, fchdir and chroot are resumed to their syscall-exit
stop, where every cached cwd (and root) is dropped, so the next relative
name reads it afresh.

Whether a path existed is decided by the tracer at the syscall's entry with
stat/lstat (following the final symlink exactly when the call does). That
costs one stat in the tracer and no second stop per call, and it answers
the question the image builder asks -- was this name there before the app
made it? -- also for rename, unlink and O_CREAT, where the outcome at exit
would describe the state *after* the call. It does not tell EACCES from
success (the tracer is root); the builder does not need that.

Each (path, action, follow) is recorded once, with its first observation;
the log is bounded (`PathLog.limit`) and says so when it dropped entries.
Paths are recorded as the app named them, made absolute, with "." and "//"
removed and ".." removed only where it follows the physical cwd or dirfd;
symlinks are never resolved.

Signals and status: a signal-delivery-stop re-injects the signal; a
group-stop (SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU) is held with PTRACE_LISTEN,
so the process stays stopped and its parent sees it stopped until SIGCONT,
as without a tracer (this is why the launcher is SEIZEd, not TRACEME'd).
Exit statuses are the kernel's. PTRACE_O_EXITKILL is set: if the tracer
died, its tracees would continue with a filter that makes every path call
fail with ENOSYS (an app in its dynamic loader then dies with "cannot open
shared object", one in its main loop misbehaves quietly); being killed is
the honest outcome (as PID 1 the sensor takes the namespace down anyway).
On a listener the app's first process has the parent-death signal SIGKILL
instead (the rest end with PID 1).

Cost: one listener round trip per path call (about 25-40 us with the
Python around it on a 2-cpu VM with Linux >= 6.6; a repeated absolute name
takes a shorter path) and nothing for a new process; or, where there is no
listener, one ptrace round trip per path call (about 65-100 us) and three
ptrace stops per new process; nothing for other calls. See
benchmarks/syscalls.py and benchmarks/syscall_trace.py.

Limits: set-id and file-capability programs run without their elevation
(no_new_privs, and a tracer without CAP_SYS_PTRACE, both forbid it), so an
app that needs `su`, `ping` or a `setcap` binary as a non-root user behaves
differently under trace; io_uring path operations and i386 socketcall(2)
are not observed; a path with AT_EMPTY_PATH and a non-empty name is not
observed; a process that sets itself non-dumpable is not readable; a
process in another mount namespace would be resolved in the sensor's. On a
listener a signal that arrives while a call waits withdraws the
notification, and a handler without SA_RESTART sees the call fail with
EINTR (SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV, Linux >= 5.19, would only
halve that, measured, and would stop the PTRACE_INTERRUPT a set*id needs).
Only little-endian x86_64 and aarch64 are supported (on aarch64 Linux >=
5.3); `probe_support` says why tracing is unavailable elsewhere.

Standard library and ctypes only: it runs in the sensor's bundle, and its
launcher runs it with `-I -S`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import itertools
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum, IntEnum
from types import FrameType
from typing import NoReturn, TypeVar

from slimmer.errors import SlimError
from slimmer.trace import PathAction

_T = TypeVar("_T")

# --- kernel constants -------------------------------------------------------

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
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1
SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP = 1
SECCOMP_IOCTL_NOTIF_RECV = 0xC0502100  # _IOWR('!', 0, struct seccomp_notif)
SECCOMP_IOCTL_NOTIF_SEND = 0xC0182101  # _IOWR('!', 1, struct seccomp_notif_resp)
SECCOMP_IOCTL_NOTIF_SET_FLAGS = 0x40082104  # _IOW('!', 4, __u64)
# SECCOMP_USER_NOTIF_FLAG_CONTINUE is Linux 5.5; without it a notified call
# could only be answered, not let through
NOTIFY_KERNEL = (5, 5)

# classic BPF opcodes
BPF_LD_W_ABS = 0x20
BPF_JMP_JA = 0x05
BPF_JMP_JEQ_K = 0x15
BPF_JMP_JGE_K = 0x35
BPF_JMP_JSET_K = 0x45
BPF_RET_K = 0x06
SECCOMP_DATA_NR = 0
SECCOMP_DATA_ARCH = 4
SECCOMP_DATA_ARGS = 16

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
MAX_MEM_FDS = 512  # open /proc/<tid>/mem files kept; all are closed beyond

EM_ARM = 40


class Abi(IntEnum):
    """A system call ABI the filter knows; its value is part of the code
    the filter returns to the tracer."""

    X86_64 = 0
    X32 = 1
    I386 = 2
    AARCH64 = 3


AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
AUDIT_ARCH_AARCH64 = 0xC00000B7
X32_SYSCALL_BIT = 0x40000000


# --- what each traced call does with paths ----------------------------------


class Follow(Enum):
    """Whether the call follows a symlink in the last component."""

    ALWAYS = "always"
    NEVER = "never"
    UNLESS_AT_NOFOLLOW = "unless AT_SYMLINK_NOFOLLOW"
    IF_AT_FOLLOW = "if AT_SYMLINK_FOLLOW"
    UNLESS_O_NOFOLLOW = "unless O_NOFOLLOW"
    UNLESS_IN_DONT_FOLLOW = "unless IN_DONT_FOLLOW"


class OpenFlags(Enum):
    """Where an open's flags are."""

    NONE = "none"
    ARGUMENT = "argument"  # open, openat: the flags argument
    HOW = "how"  # openat2: the first u64 of struct open_how


@dataclass(frozen=True, slots=True)
class PathOperand:
    path_arg: int
    action: PathAction
    follow: Follow
    dirfd_arg: int | None = None


@dataclass(frozen=True, slots=True)
class SyscallSpec:
    """A traced call: its path operands and what decides their meaning.
    `flags_arg` holds AT_* flags, open flags or an inotify mask."""

    name: str
    operands: tuple[PathOperand, ...] = ()
    flags_arg: int | None = None
    opens: OpenFlags = OpenFlags.NONE
    allow_empty_path: bool = False  # the filter lets AT_EMPTY_PATH calls through
    allow_null_path: bool = False  # the filter lets a NULL path through (futimens)
    moves_cwd: bool = False  # chdir, fchdir, chroot: cached cwds are stale after it
    changes_ids: bool = False  # set*id: the kernel makes the process non-dumpable
    sockaddr: bool = False  # connect, bind: a sockaddr at arg 1, its length at arg 2


def _operand(
    path_arg: int, action: PathAction, follow: Follow, dirfd_arg: int | None = None
) -> tuple[PathOperand, ...]:
    return (PathOperand(path_arg, action, follow, dirfd_arg),)


A = PathAction
F = Follow
SPECS: tuple[SyscallSpec, ...] = (
    SyscallSpec("open", _operand(0, A.OPEN, F.UNLESS_O_NOFOLLOW), 1, OpenFlags.ARGUMENT),
    SyscallSpec("openat", _operand(1, A.OPEN, F.UNLESS_O_NOFOLLOW, 0), 2, OpenFlags.ARGUMENT),
    SyscallSpec("openat2", _operand(1, A.OPEN, F.UNLESS_O_NOFOLLOW, 0), opens=OpenFlags.HOW),
    SyscallSpec("creat", _operand(0, A.CREATE, F.ALWAYS)),
    SyscallSpec("stat", _operand(0, A.STAT, F.ALWAYS)),
    SyscallSpec("lstat", _operand(0, A.STAT, F.NEVER)),
    SyscallSpec("oldstat", _operand(0, A.STAT, F.ALWAYS)),
    SyscallSpec("oldlstat", _operand(0, A.STAT, F.NEVER)),
    SyscallSpec("stat64", _operand(0, A.STAT, F.ALWAYS)),
    SyscallSpec("lstat64", _operand(0, A.STAT, F.NEVER)),
    SyscallSpec(
        "newfstatat",
        _operand(1, A.STAT, F.UNLESS_AT_NOFOLLOW, 0),
        3,
        allow_empty_path=True,
    ),
    SyscallSpec(
        "fstatat64",
        _operand(1, A.STAT, F.UNLESS_AT_NOFOLLOW, 0),
        3,
        allow_empty_path=True,
    ),
    SyscallSpec("statx", _operand(1, A.STAT, F.UNLESS_AT_NOFOLLOW, 0), 2, allow_empty_path=True),
    SyscallSpec("access", _operand(0, A.ACCESS, F.ALWAYS)),
    SyscallSpec("faccessat", _operand(1, A.ACCESS, F.ALWAYS, 0)),
    SyscallSpec(
        "faccessat2",
        _operand(1, A.ACCESS, F.UNLESS_AT_NOFOLLOW, 0),
        3,
        allow_empty_path=True,
    ),
    SyscallSpec("readlink", _operand(0, A.READLINK, F.NEVER)),
    SyscallSpec("readlinkat", _operand(1, A.READLINK, F.NEVER, 0)),
    SyscallSpec("execve", _operand(0, A.EXEC, F.ALWAYS)),
    SyscallSpec("execveat", _operand(1, A.EXEC, F.UNLESS_AT_NOFOLLOW, 0), 4, allow_empty_path=True),
    SyscallSpec("chdir", _operand(0, A.CHDIR, F.ALWAYS), moves_cwd=True),
    SyscallSpec("fchdir", moves_cwd=True),
    SyscallSpec("chroot", _operand(0, A.CHROOT, F.ALWAYS), moves_cwd=True),
    SyscallSpec(
        "rename",
        (PathOperand(0, A.RENAME_FROM, F.NEVER), PathOperand(1, A.RENAME_TO, F.NEVER)),
    ),
    SyscallSpec(
        "renameat",
        (PathOperand(1, A.RENAME_FROM, F.NEVER, 0), PathOperand(3, A.RENAME_TO, F.NEVER, 2)),
    ),
    SyscallSpec(
        "renameat2",
        (PathOperand(1, A.RENAME_FROM, F.NEVER, 0), PathOperand(3, A.RENAME_TO, F.NEVER, 2)),
    ),
    SyscallSpec("link", (PathOperand(0, A.LINK_FROM, F.NEVER), PathOperand(1, A.CREATE, F.NEVER))),
    SyscallSpec(
        "linkat",
        (
            PathOperand(1, A.LINK_FROM, F.IF_AT_FOLLOW, 0),
            PathOperand(3, A.CREATE, F.NEVER, 2),
        ),
        4,
    ),
    SyscallSpec("symlink", _operand(1, A.CREATE, F.NEVER)),
    SyscallSpec("symlinkat", _operand(2, A.CREATE, F.NEVER, 1)),
    SyscallSpec("unlink", _operand(0, A.REMOVE, F.NEVER)),
    SyscallSpec("unlinkat", _operand(1, A.REMOVE, F.NEVER, 0)),
    SyscallSpec("rmdir", _operand(0, A.REMOVE, F.NEVER)),
    SyscallSpec("mkdir", _operand(0, A.CREATE, F.NEVER)),
    SyscallSpec("mkdirat", _operand(1, A.CREATE, F.NEVER, 0)),
    SyscallSpec("mknod", _operand(0, A.CREATE, F.NEVER)),
    SyscallSpec("mknodat", _operand(1, A.CREATE, F.NEVER, 0)),
    SyscallSpec("truncate", _operand(0, A.WRITE, F.ALWAYS)),
    SyscallSpec("truncate64", _operand(0, A.WRITE, F.ALWAYS)),
    SyscallSpec("chmod", _operand(0, A.CHANGE_ATTRS, F.ALWAYS)),
    SyscallSpec("fchmodat", _operand(1, A.CHANGE_ATTRS, F.ALWAYS, 0)),
    SyscallSpec(
        "fchmodat2",
        _operand(1, A.CHANGE_ATTRS, F.UNLESS_AT_NOFOLLOW, 0),
        3,
        allow_empty_path=True,
    ),
    SyscallSpec("chown", _operand(0, A.CHANGE_ATTRS, F.ALWAYS)),
    SyscallSpec("lchown", _operand(0, A.CHANGE_ATTRS, F.NEVER)),
    SyscallSpec("chown32", _operand(0, A.CHANGE_ATTRS, F.ALWAYS)),
    SyscallSpec("lchown32", _operand(0, A.CHANGE_ATTRS, F.NEVER)),
    SyscallSpec(
        "fchownat",
        _operand(1, A.CHANGE_ATTRS, F.UNLESS_AT_NOFOLLOW, 0),
        4,
        allow_empty_path=True,
    ),
    SyscallSpec("utime", _operand(0, A.CHANGE_ATTRS, F.ALWAYS)),
    SyscallSpec("utimes", _operand(0, A.CHANGE_ATTRS, F.ALWAYS)),
    SyscallSpec("futimesat", _operand(1, A.CHANGE_ATTRS, F.ALWAYS, 0), allow_null_path=True),
    SyscallSpec(
        "utimensat",
        _operand(1, A.CHANGE_ATTRS, F.UNLESS_AT_NOFOLLOW, 0),
        3,
        allow_null_path=True,
    ),
    SyscallSpec(
        "utimensat_time64",
        _operand(1, A.CHANGE_ATTRS, F.UNLESS_AT_NOFOLLOW, 0),
        3,
        allow_null_path=True,
    ),
    SyscallSpec("getxattr", _operand(0, A.STAT, F.ALWAYS)),
    SyscallSpec("lgetxattr", _operand(0, A.STAT, F.NEVER)),
    SyscallSpec("listxattr", _operand(0, A.STAT, F.ALWAYS)),
    SyscallSpec("llistxattr", _operand(0, A.STAT, F.NEVER)),
    SyscallSpec("setxattr", _operand(0, A.CHANGE_ATTRS, F.ALWAYS)),
    SyscallSpec("lsetxattr", _operand(0, A.CHANGE_ATTRS, F.NEVER)),
    SyscallSpec("removexattr", _operand(0, A.CHANGE_ATTRS, F.ALWAYS)),
    SyscallSpec("lremovexattr", _operand(0, A.CHANGE_ATTRS, F.NEVER)),
    SyscallSpec("statfs", _operand(0, A.STAT, F.ALWAYS)),
    SyscallSpec("statfs64", _operand(0, A.STAT, F.ALWAYS)),
    SyscallSpec("inotify_add_watch", _operand(1, A.WATCH, F.UNLESS_IN_DONT_FOLLOW), 2),
    SyscallSpec("connect", _operand(1, A.CONNECT, F.ALWAYS), sockaddr=True),
    SyscallSpec("bind", _operand(1, A.CREATE, F.NEVER), sockaddr=True),
    *(
        SyscallSpec(name, changes_ids=True)
        for name in (
            "setuid", "setgid", "setreuid", "setregid",
            "setresuid", "setresgid", "setfsuid", "setfsgid",
        )
    ),
)  # fmt: skip
del A, F
SPEC_INDEX: dict[str, int] = {spec.name: index for index, spec in enumerate(SPECS)}

_X86_64_NUMBERS: dict[str, int] = {
    "open": 2, "stat": 4, "lstat": 6, "access": 21, "connect": 42, "bind": 49,
    "execve": 59, "truncate": 76, "chdir": 80, "fchdir": 81, "rename": 82, "mkdir": 83,
    "rmdir": 84, "creat": 85, "link": 86, "unlink": 87, "symlink": 88, "readlink": 89,
    "chmod": 90, "chown": 92, "lchown": 94, "utime": 132, "mknod": 133, "statfs": 137,
    "chroot": 161, "setxattr": 188, "lsetxattr": 189, "getxattr": 191, "lgetxattr": 192,
    "listxattr": 194, "llistxattr": 195, "removexattr": 197, "lremovexattr": 198,
    "utimes": 235, "inotify_add_watch": 254, "openat": 257, "mkdirat": 258, "mknodat": 259,
    "fchownat": 260, "futimesat": 261, "newfstatat": 262, "unlinkat": 263, "renameat": 264,
    "linkat": 265, "symlinkat": 266, "readlinkat": 267, "fchmodat": 268, "faccessat": 269,
    "utimensat": 280, "renameat2": 316, "execveat": 322, "statx": 332, "openat2": 437,
    "faccessat2": 439, "fchmodat2": 452,
    "setuid": 105, "setgid": 106, "setreuid": 113, "setregid": 114, "setresuid": 117,
    "setresgid": 119, "setfsuid": 122, "setfsgid": 123,
}  # fmt: skip
_X86_64_PRCTL = 157
# set*id calls are traced in the x86_64 ABI only: there the tracer can make
# a process that changed its ids dumpable again (see SyscallTracer).
_SET_ID_CALLS = frozenset(spec.name for spec in SPECS if spec.changes_ids)
_X86_64_SET_ID_NUMBERS = frozenset(_X86_64_NUMBERS[name] for name in _SET_ID_CALLS)
# syscall stops a process seized at a set*id may make (in a signal handler)
# before the call is restarted; then it runs on without the injection
SET_ID_SEARCH_STOPS = 256

# x32: the x86_64 numbers with bit 30 set, except the calls whose
# arguments hold pointers to pointer arrays.
_X32_NUMBERS: dict[str, int] = {
    **{
        name: X32_SYSCALL_BIT | number
        for name, number in _X86_64_NUMBERS.items()
        if name not in _SET_ID_CALLS
    },
    "execve": X32_SYSCALL_BIT | 520,
    "execveat": X32_SYSCALL_BIT | 545,
}

_I386_NUMBERS: dict[str, int] = {
    "open": 5, "creat": 8, "link": 9, "unlink": 10, "execve": 11, "chdir": 12, "mknod": 14,
    "chmod": 15, "lchown": 16, "oldstat": 18, "utime": 30, "access": 33, "rename": 38,
    "mkdir": 39, "rmdir": 40, "chroot": 61, "symlink": 83, "oldlstat": 84, "readlink": 85,
    "truncate": 92, "statfs": 99, "stat": 106, "lstat": 107, "fchdir": 133, "chown": 182,
    "truncate64": 193, "stat64": 195, "lstat64": 196, "lchown32": 198, "chown32": 212,
    "setxattr": 226, "lsetxattr": 227, "getxattr": 229, "lgetxattr": 230, "listxattr": 232,
    "llistxattr": 233, "removexattr": 235, "lremovexattr": 236, "statfs64": 268,
    "utimes": 271, "inotify_add_watch": 292, "openat": 295, "mkdirat": 296, "mknodat": 297,
    "fchownat": 298, "futimesat": 299, "fstatat64": 300, "unlinkat": 301, "renameat": 302,
    "linkat": 303, "symlinkat": 304, "readlinkat": 305, "fchmodat": 306, "faccessat": 307,
    "utimensat": 320, "renameat2": 353, "execveat": 358, "bind": 361, "connect": 362,
    "statx": 383, "utimensat_time64": 412, "openat2": 437, "faccessat2": 439,
    "fchmodat2": 452,
}  # fmt: skip

# The generic table (asm-generic/unistd.h) has only the *at calls.
_AARCH64_NUMBERS: dict[str, int] = {
    "setxattr": 5, "lsetxattr": 6, "getxattr": 8, "lgetxattr": 9, "listxattr": 11,
    "llistxattr": 12, "removexattr": 14, "lremovexattr": 15, "inotify_add_watch": 27,
    "mknodat": 33, "mkdirat": 34, "unlinkat": 35, "symlinkat": 36, "linkat": 37,
    "renameat": 38, "statfs": 43, "truncate": 45, "faccessat": 48, "chdir": 49, "fchdir": 50,
    "chroot": 51, "fchmodat": 53, "fchownat": 54, "openat": 56, "readlinkat": 78,
    "newfstatat": 79, "utimensat": 88, "bind": 200, "connect": 203, "execve": 221,
    "renameat2": 276, "execveat": 281, "statx": 291, "openat2": 437, "faccessat2": 439,
    "fchmodat2": 452,
}  # fmt: skip

SYSCALL_NUMBERS: dict[Abi, dict[str, int]] = {
    Abi.X86_64: _X86_64_NUMBERS,
    Abi.X32: _X32_NUMBERS,
    Abi.I386: _I386_NUMBERS,
    Abi.AARCH64: _AARCH64_NUMBERS,
}


@dataclass(frozen=True)
class MachineSupport:
    """What a kernel architecture (os.uname().machine) runs and how the
    filter recognises it."""

    abis: tuple[Abi, ...]
    # ELF machines this kernel runs natively in an ABI the filter does not
    # know (a foreign program under binfmt emulation makes native calls)
    untraced_elf_machines: frozenset[int]
    o_nofollow: int
    regs_fallback: bool  # PTRACE_GETREGS when PTRACE_GET_SYSCALL_INFO is missing
    seccomp_call: int  # the number of seccomp(2)


MACHINES: dict[str, MachineSupport] = {
    "x86_64": MachineSupport(
        (Abi.X86_64, Abi.X32, Abi.I386),
        frozenset(),
        O_NOFOLLOW_X86,
        regs_fallback=True,
        seccomp_call=317,
    ),
    "aarch64": MachineSupport(
        (Abi.AARCH64,),
        frozenset({EM_ARM}),
        O_NOFOLLOW_ARM64,
        regs_fallback=False,
        seccomp_call=277,
    ),
}


# --- the seccomp filter ------------------------------------------------------


def _insn(code: int, jt: int, jf: int, k: int) -> tuple[int, int, int, int]:
    return (code, jt, jf, k & 0xFFFFFFFF)


def _action(notify: bool) -> int:
    """What the filter returns for a call it sends to the tracer: with
    `notify` every such call (chdir and set*id too) waits on the seccomp
    listener, for the processes are not traced; else it is a ptrace stop.
    (TRACE without a tracer would fail the call with ENOSYS.)"""
    return SECCOMP_RET_USER_NOTIF if notify else SECCOMP_RET_TRACE


def _entry(
    number: int, code: int, spec: SyscallSpec, notify: bool
) -> list[tuple[int, int, int, int]]:
    """Instructions for one call: ALLOW where the filter can tell no path
    is named, else TRACE (or USER_NOTIF) with `code` as the data."""
    trace = _insn(BPF_RET_K, 0, 0, _action(notify) | code)
    allow = _insn(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW)
    if spec.allow_empty_path and spec.flags_arg is not None:
        low = SECCOMP_DATA_ARGS + 8 * spec.flags_arg
        body = [
            _insn(BPF_LD_W_ABS, 0, 0, low),
            _insn(BPF_JMP_JSET_K, 0, 1, AT_EMPTY_PATH),
            allow,
            trace,
        ]
    elif spec.allow_null_path:
        low = SECCOMP_DATA_ARGS + 8 * spec.operands[0].path_arg
        body = [
            _insn(BPF_LD_W_ABS, 0, 0, low),
            _insn(BPF_JMP_JEQ_K, 0, 3, 0),
            _insn(BPF_LD_W_ABS, 0, 0, low + 4),
            _insn(BPF_JMP_JEQ_K, 0, 1, 0),
            allow,
            trace,
        ]
    else:
        body = [trace]
    return [_insn(BPF_JMP_JEQ_K, 0, len(body), number), *body]


def _abi_block(abi: Abi, notify: bool) -> list[tuple[int, int, int, int]]:
    """Match the number against the ABI's table (the number is loaded)."""
    block: list[tuple[int, int, int, int]] = []
    for name, number in sorted(SYSCALL_NUMBERS[abi].items(), key=lambda item: item[1]):
        block += _entry(number, (abi << 8) | SPEC_INDEX[name], SPECS[SPEC_INDEX[name]], notify)
    block.append(_insn(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW))
    return block


def seccomp_filter(machine: str, *, notify: bool = False) -> bytes:
    """The classic-BPF program (struct sock_filter[]) for a kernel
    architecture: TRACE path calls of every ABI it runs, ALLOW the rest.
    With `notify`, they go to the seccomp listener instead (USER_NOTIF)."""
    support = MACHINES.get(machine)
    if support is None:
        raise ValueError(f"no syscall tables for {machine}")
    program: list[tuple[int, int, int, int]] = [_insn(BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_ARCH)]
    load_nr = _insn(BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_NR)
    blocks: list[tuple[int, list[tuple[int, int, int, int]]]] = []
    if Abi.X86_64 in support.abis:
        x32 = [load_nr, *_abi_block(Abi.X32, notify)]
        native = _abi_block(Abi.X86_64, notify)
        x86 = [
            load_nr,
            _insn(BPF_JMP_JGE_K, 0, 1, X32_SYSCALL_BIT),  # x32: bit 30 of the number
            _insn(BPF_JMP_JA, 0, 0, len(native)),  # (jt and jf reach 255 at most)
            *native,
            *x32[1:],
        ]
        blocks.append((AUDIT_ARCH_X86_64, x86))
    if Abi.I386 in support.abis:
        blocks.append((AUDIT_ARCH_I386, [load_nr, *_abi_block(Abi.I386, notify)]))
    if Abi.AARCH64 in support.abis:
        blocks.append((AUDIT_ARCH_AARCH64, [load_nr, *_abi_block(Abi.AARCH64, notify)]))
    # dispatch on the arch: jeq arch -> ja block; anything else is allowed
    dispatch_length = 2 * len(blocks) + 1
    offset = 0
    for position, (arch, block) in enumerate(blocks):
        after_ja = 2 * position + 2  # index (within dispatch) after this ja
        program.append(_insn(BPF_JMP_JEQ_K, 0, 1, arch))
        program.append(_insn(BPF_JMP_JA, 0, 0, dispatch_length - after_ja + offset))
        offset += len(block)
    program.append(_insn(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW))
    for _, block in blocks:
        program += block
    return b"".join(struct.pack("<HBBI", *insn) for insn in program)


_ABI_ARCH = {
    Abi.X86_64: AUDIT_ARCH_X86_64,
    Abi.X32: AUDIT_ARCH_X86_64,
    Abi.I386: AUDIT_ARCH_I386,
    Abi.AARCH64: AUDIT_ARCH_AARCH64,
}


def call_codes(machine: str) -> dict[tuple[int, int], int]:
    """(audit arch, call number) -> the code the filter would return as
    data, for the calls a seccomp notification reports (it carries the
    number and arch, not the filter's data)."""
    support = MACHINES[machine]
    return {
        (_ABI_ARCH[abi], number): (abi << 8) | SPEC_INDEX[name]
        for abi in support.abis
        for name, number in SYSCALL_NUMBERS[abi].items()
    }


def notify_supported(release: str) -> bool:
    """Whether a kernel release (os.uname().release) can let a notified
    call through (SECCOMP_USER_NOTIF_FLAG_CONTINUE)."""
    numbers: list[int] = []
    for part in release.split("-", 1)[0].split(".")[:2]:
        digits = "".join(itertools.takewhile(str.isdigit, part))
        if not digits:
            return False
        numbers.append(int(digits))
    return len(numbers) == 2 and tuple(numbers) >= NOTIFY_KERNEL


# --- ctypes plumbing ---------------------------------------------------------


class _SockFprog(ctypes.Structure):
    _fields_ = (("length", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def _libc() -> ctypes.CDLL:
    # The process's own libc (find_library would run the image's tools).
    # PyDLL: these calls never block, and keeping the GIL across them spares
    # the tracer a wait for the sensor's other threads at every stop.
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


# --- the record --------------------------------------------------------------


@dataclass(frozen=True)
class PathRecord:
    """One path a traced process named, first observation."""

    path: str  # absolute, as named (surrogateescape for undecodable bytes)
    action: PathAction
    follow: bool  # the call followed a symlink in the last component
    existed: bool  # the name resolved (as the call would) when the call began

    def to_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "action": self.action.value,
            "follow": self.follow,
            "existed": self.existed,
        }


DEFAULT_LOG_LIMIT = 200_000


class PathLog:
    """The first observation of each (path, action, follow), bounded."""

    def __init__(self, limit: int = DEFAULT_LOG_LIMIT) -> None:
        self.limit = limit
        self.first: dict[tuple[bytes, PathAction, bool], bool] = {}
        self.dropped = 0  # observations not kept because the log was full
        self.unresolved = 0  # names unreadable, or relative with no readable cwd or dirfd
        self.unobserved_programs: set[bytes] = set()  # exec'd in an ABI not traced

    def add(self, key: tuple[bytes, PathAction, bool], existed: bool) -> None:
        if len(self.first) >= self.limit:
            self.dropped += 1
            return
        self.first[key] = existed

    @property
    def complete(self) -> bool:
        """Every observation was kept (unresolved names are counted apart)."""
        return self.dropped == 0

    def records(self) -> list[PathRecord]:
        return sorted(
            (
                PathRecord(os.fsdecode(path), action, follow, existed)
                for (path, action, follow), existed in self.first.items()
            ),
            key=lambda r: (r.path, r.action.value, r.follow),
        )

    def to_json(self) -> dict[str, object]:
        return {
            "paths": [record.to_json() for record in self.records()],
            "complete": self.complete,
            "dropped": self.dropped,
            "unresolved": self.unresolved,
            "unobserved_programs": sorted(os.fsdecode(p) for p in self.unobserved_programs),
        }


# --- paths -------------------------------------------------------------------


def clean_absolute(path: bytes) -> bytes:
    """Drop "//", "/./" and a trailing "/"; ".." at the root stays at the
    root; any other ".." is kept (the component before it may be a link)."""
    if b"//" not in path and b"/." not in path and (len(path) == 1 or not path.endswith(b"/")):
        return path
    parts: list[bytes] = []
    for part in path.split(b"/"):
        if part in (b"", b"."):
            continue
        if part == b".." and not parts:
            continue  # the root's parent is the root
        parts.append(part)
    return b"/" + b"/".join(parts)


def join_physical(base: bytes, name: bytes) -> bytes:
    """`name` relative to `base`, a directory the kernel named (no link in
    it), so a leading ".." is exact there."""
    parts = [p for p in base.split(b"/") if p]
    rest = [p for p in name.split(b"/") if p not in (b"", b".")]
    while rest and rest[0] == b"..":
        rest.pop(0)
        if parts:
            parts.pop()
    return clean_absolute(b"/" + b"/".join(parts + rest))


def _exists(path: bytes, follow: bool) -> bool:
    try:
        os.stat(path, follow_symlinks=follow)
    except (OSError, ValueError):
        return False
    return True


def _proc_ids(tid: int) -> tuple[int, int] | None:
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


def program_machine(path: bytes) -> int | None:
    """The ELF e_machine of a program (following one #! line), or None
    when it is not an ELF file or a script of one."""
    for _ in range(2):
        try:
            with open(path, "rb") as handle:
                head = handle.read(256)
        except OSError:
            return None
        if head.startswith(b"\x7fELF") and len(head) >= 20:
            return int.from_bytes(head[18:20], "big" if head[5] == 2 else "little")
        if not head.startswith(b"#!"):
            return None
        line = head[2:].split(b"\n", 1)[0].strip()
        path = line.split()[0] if line else b""
    return None


# --- the launcher (runs in the fresh child) ------------------------------------

_BOOT = (
    "import sys\n"
    "sys.path.insert(0, sys.argv[1])\n"
    "from slimmer.sensor.syscalls import launcher_main\n"
    "launcher_main(sys.argv[2:])\n"
)


class LaunchMode(Enum):
    EXEC = "exec"  # exec the app
    PROBE = "probe"  # make one traced call and exit 0


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
            }
        ).encode()


def _fail(err_fd: int, stage: LaunchStage, number: int, message: str) -> None:
    report = json.dumps({"stage": stage.value, "errno": number, "message": message})
    with contextlib.suppress(OSError):
        os.write(err_fd, report.encode())
    os._exit(127 if number == errno.ENOENT else 126)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


LAUNCHER_READY = b"R"  # the launcher's first byte on its error socket
# its second, once the filter is in place: how the tracer hears of path calls
LAUNCHER_LISTENS = b"L"  # a seccomp listener, sent along with this byte
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
        wire = json.loads(_read_all(request_fd))
        os.close(request_fd)

        def raw(text: str) -> bytes:
            return text.encode("latin-1")

        libc = _libc()
        machine = os.uname().machine
        trace_program = _pack_filter(seccomp_filter(machine))
        notify_program = _pack_filter(seccomp_filter(machine, notify=True))
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
        _install_filter(libc, err_fd, machine, trace_program, notify_program, wire["notify"])
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
    trace_program: _SockFprog,
    notify_program: _SockFprog,
    notify: bool,
) -> None:
    """Install the filter and tell the tracer how it will hear of calls:
    with a seccomp listener where the kernel gives one (its fd goes to the
    tracer, this process keeps none), else with ptrace stops alone. On a
    listener the tracer lets the app go after its exec, so PTRACE_O_EXITKILL
    no longer ties the app to it: the parent-death signal does (for the
    app's first process; the sensor is PID 1, so the rest end with it)."""
    listener = -1
    if notify:
        listener = libc.syscall(
            ctypes.c_long(MACHINES[machine].seccomp_call),
            ctypes.c_long(SECCOMP_SET_MODE_FILTER),
            ctypes.c_long(SECCOMP_FILTER_FLAG_NEW_LISTENER),
            ctypes.c_void_p(ctypes.addressof(notify_program)),
        )
    if listener < 0:
        address = ctypes.addressof(trace_program)
        if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, address, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")
        os.write(err_fd, LAUNCHER_PTRACED)
        return
    channel = socket.socket(fileno=err_fd)
    try:
        socket.send_fds(channel, [LAUNCHER_LISTENS], [listener])
    finally:
        channel.detach()
        os.close(listener)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _pack_filter(program: bytes) -> _SockFprog:
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.addressof(buffer))
    fprog._buffer = buffer  # type: ignore[attr-defined]  # keep it alive
    return fprog


def package_root() -> str:
    """The sys.path entry that holds the slimmer package."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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


# --- the tracer ----------------------------------------------------------------


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


@dataclass
class TracerStats:
    stops: int = 0  # seccomp stops
    notifications: int = 0  # calls heard of on the seccomp listener
    events: int = 0  # every ptrace stop
    peek_reads: int = 0  # strings read word by word
    mem_opens: int = 0  # /proc/<tid>/mem files opened
    proc_reads: int = 0  # readlinks of /proc/<tid>/cwd or fd
    fsuid_switches: int = 0
    attaches: int = 0  # processes seized at a set*id call (on a listener)


@dataclass
class _Launch:
    popen: subprocess.Popen[bytes]
    err_read: int
    request_write: int
    traced_calls: int = 0


@dataclass
class _Injection:
    """A prctl(PR_SET_DUMPABLE, 1) the tracer made a tracee call."""

    saved_regs: bytes  # the registers at the set*id's exit stop, restored after
    entered: bool = False  # the prctl's entry stop was seen


@dataclass
class _Caches:
    cwd: dict[int, bytes] = field(default_factory=dict)  # tid -> its cwd
    root: dict[int, bytes] = field(default_factory=dict)  # tid -> its root (after a chroot)
    ids: dict[int, tuple[int, int]] = field(default_factory=dict)  # tid -> its uid, gid
    mem: dict[int, int] = field(default_factory=dict)  # tid -> open /proc/<tid>/mem
    peek_only: set[int] = field(default_factory=set)  # /proc/<tid>/mem refused
    in_exit: set[int] = field(default_factory=set)  # resumed to a syscall-exit stop
    ids_exit: set[int] = field(default_factory=set)  # resumed to a set*id's exit stop
    injecting: dict[int, _Injection] = field(default_factory=dict)
    # on a listener: processes seized at a set*id call (and their children
    # born since), let go at their exec
    seized: set[int] = field(default_factory=set)
    ids_entry: dict[int, int] = field(default_factory=dict)  # tid -> stops left to find it


SERVE_BATCH = 256  # calls served between two looks for ptrace stops
# records a call that waits on the listener (tid, number, arch, arguments);
# whether to let it run now
_Answer = Callable[[int, int, int, tuple[int, ...]], bool]
_NOTIF = struct.Struct("<QIIiIQ6Q")  # struct seccomp_notif: id pid flags, seccomp_data
_NOTIF_RESP = struct.Struct("<QqiI")  # struct seccomp_notif_resp: id val error flags


class _Listener:
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

    def serve(self, timeout_ms: int, answer: _Answer) -> int:
        """Serve calls until none comes for `timeout_ms`: `answer` records
        each and says whether to let it run now (False: the caller was
        seized, see SyscallTracer). Returns the number served, early when
        the watched process ended, a wakeup came, or after a batch (so the
        caller looks for ptrace stops even where no wakeup tells it)."""
        served = 0
        while served < SERVE_BATCH and (events := self._poller.poll(timeout_ms)):
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

    def _serve_one(self, answer: _Answer) -> int:
        request = self._request
        ctypes.memset(request, 0, _NOTIF.size)
        if self._libc.ioctl(self.fd, SECCOMP_IOCTL_NOTIF_RECV, request) != 0:
            return 0  # it went away: a signal interrupted it, or it died
        call_id, tid, _flags, number, arch, _ip, *args = _NOTIF.unpack_from(request)
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
class _ChildSignalWakeup:
    """SIGCHLD (a tracee stopped, a child ended) writes a byte that wakes
    the tracer's wait on the listener (signal.set_wakeup_fd): a ptrace stop
    is served at once, not at the next timeout. Only the main thread may
    install it; elsewhere the loop looks for stops every millisecond while
    it has tracees."""

    read_fd: int
    write_fd: int
    previous_handler: Callable[[int, FrameType | None], object] | int | None

    @classmethod
    def install(cls) -> _ChildSignalWakeup | None:
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


class _PidCursor:
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


_INFO = struct.Struct("<B3xIQQQ6QI")  # struct ptrace_syscall_info, the seccomp variant
_ENTRY_INFO_SIZE = 80  # the entry variant: no ret_data
_REGS_WORDS = 27  # struct user_regs_struct on x86_64
# argument registers in user_regs_struct: rdi rsi rdx r10 r8 r9 / ebx ecx edx esi edi ebp
_X86_64_ARG_REGS = (14, 13, 12, 7, 9, 8)
_I386_ARG_REGS = (5, 11, 12, 13, 14, 4)
_RAX, _ORIG_RAX, _RIP = 10, 15, 16


class SyscallTracer:
    """Starts an app under ptrace + seccomp and records the paths its
    process tree names. Every method must run on the thread that called
    `launch` (ptrace requests come from the tracer thread).

    `use_syscall_info=False` reads registers as on kernels before 5.3;
    `use_proc_mem=False` reads memory only with PTRACE_PEEKDATA, as where
    /proc/<tid>/mem is refused; `use_notify=False` takes every path call
    as a ptrace stop, as on kernels before 5.5. All are the fallbacks, for
    tests and diagnosis."""

    def __init__(
        self,
        log: PathLog | None = None,
        interpreter: Sequence[str] | None = None,
        *,
        use_syscall_info: bool = True,
        use_proc_mem: bool = True,
        use_notify: bool = True,
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
        self._libc = _libc()
        self._use_info = use_syscall_info
        self._use_proc_mem = use_proc_mem
        self._use_notify = use_notify and notify_supported(os.uname().release)
        self._codes = call_codes(self.machine)
        self._listener: _Listener | None = None
        self._cursor: _PidCursor | None = None  # with the listener
        self._wakeup: _ChildSignalWakeup | None = None  # with the listener
        # (code, flags, absolute name) of notified calls already recorded
        self._known: set[tuple[int, int, bytes]] = set()
        self._in_stop = False  # serving a ptrace stop: PTRACE_PEEKDATA works
        self._own_ids = (os.getuid(), os.getgid())
        self._info = ctypes.create_string_buffer(128)
        self._regs = (ctypes.c_ulonglong * _REGS_WORDS)()
        self._message = ctypes.c_ulong()
        self._buffer = ctypes.create_string_buffer(PATH_MAX + 1)
        self._caches = _Caches()
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
        _read_all(launch.err_read)  # EOF: the exec closed the launcher's end
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
            wire = replace(request, notify=self._use_notify).to_wire()
            while wire:
                wire = wire[os.write(launch.request_write, wire) :]
        finally:
            os.close(launch.request_write)
        return launch

    def _start_launcher(self) -> _Launch:
        """Start the launcher, seize it, wait until it is ready."""
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
                    _BOOT,
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
        options = TRACE_OPTIONS | PTRACE_O_TRACEEXEC
        if self._libc.ptrace(PTRACE_SEIZE, popen.pid, 0, options) != 0:
            number = ctypes.get_errno()
            os.close(request_write)
            os.close(err_read)
            popen.kill()
            popen.wait()
            raise TracingUnavailable(Refusal.PTRACE_REFUSED, f"PTRACE_SEIZE: {os.strerror(number)}")
        launch = _Launch(popen, err_read, request_write)
        self._await_ready(launch)
        return launch

    def _await_ready(self, launch: _Launch) -> None:
        """Serve the seized launcher's stops (a signal it gets while it
        starts) until it says it is ready."""
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
            if channel.recv(1, socket.MSG_PEEK) not in (LAUNCHER_LISTENS, LAUNCHER_PTRACED):
                return  # a failure report, or EOF
            message, fds, _flags, _address = socket.recv_fds(channel, 1, 1)
        finally:
            channel.detach()
        if message == LAUNCHER_LISTENS and fds:
            self._listener = _Listener(fds[0], self._libc)
            self._cursor = _PidCursor()
            self._wakeup = _ChildSignalWakeup.install()
            if self._wakeup is not None:
                self._listener.watch_wakeups(self._wakeup.read_fd)

    def _launch_failed(self, launch: _Launch, status: int) -> NoReturn:
        """Raise what the launcher reported before it ended."""
        report = _read_all(launch.err_read)
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

    def _serve(self, listener: _Listener, timeout_ms: int) -> int:
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
        _PidCursor)."""
        return self._cursor is None or self._cursor.settled(tid)

    def _wait_ms(self) -> int:
        """How long the loop may wait on the listener before it looks for
        ptrace stops and ended children again, and samples the pid cursor.
        Calls and the app's end wake it, and so does SIGCHLD where the
        wakeup is installed; elsewhere it looks every millisecond while it
        has tracees."""
        if self._wakeup is None and (self._caches.seized or self._launch is not None):
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
                if known is not None and len(self._known) < self.log.limit:
                    self._known.add(known)
                if spec.changes_ids and self._seize_for_ids(tid):
                    return False
        except (OSError, ValueError, IndexError):
            self.log.unresolved += 1  # never leave the call waiting
        return True

    def _seize_for_ids(self, tid: int) -> bool:
        """A set*id waits on the listener: a root process dropping its ids
        turns non-dumpable, and then neither its memory nor its /proc links
        could be read (see _inject_dumpable). Seize it (it is still root
        and dumpable) and interrupt the wait: the kernel withdraws the
        notification, and the call restarts under ptrace, where the tracer
        sees its exit. True when the call is left to that."""
        caches = self._caches
        if tid in caches.ids_exit or tid in caches.ids_entry or tid in caches.injecting:
            return False  # the restarted call (on to its exit stop), or a handler's
        if tid not in caches.seized:
            # it stays seized until it execs: once its ids changed, the
            # tracer could not seize it again for its next set*id
            options = TRACE_OPTIONS | PTRACE_O_TRACEEXEC
            if self._libc.ptrace(PTRACE_SEIZE, tid, 0, options) != 0:
                return False
            self.stats.attaches += 1
            caches.seized.add(tid)
        caches.ids_entry[tid] = SET_ID_SEARCH_STOPS
        self._ptrace(PTRACE_INTERRUPT, tid, 0, 0)
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
        name = self._read_cstring(tid, args[operand.path_arg])
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
            # a group-stop stays a stop (and SIGCONT still wakes it); a new
            # child's first stop, a notification or PTRACE_INTERRUPT's trap
            # only needs a restart
            request = PTRACE_LISTEN if sig in STOP_SIGNALS else self._resume(pid)
            self._ptrace(request, pid, 0, 0)
        elif event == PTRACE_EVENT_EXEC and pid in self._caches.seized:
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
        caches = self._caches
        at_work = tid in caches.injecting or tid in caches.ids_entry or tid in caches.ids_exit
        return PTRACE_SYSCALL if at_work else PTRACE_CONT

    def _ptrace(self, request: int, pid: int, addr: int, data: int) -> None:
        # ESRCH: the tracee died meanwhile (SIGKILL); waitpid will say so
        self._libc.ptrace(request, pid, addr, data)

    def _forget(self, tid: int) -> None:
        caches = self._caches
        self._close_mem(tid)
        caches.cwd.pop(tid, None)
        caches.root.pop(tid, None)
        caches.ids.pop(tid, None)
        caches.peek_only.discard(tid)
        caches.in_exit.discard(tid)
        caches.ids_exit.discard(tid)
        caches.injecting.pop(tid, None)
        caches.seized.discard(tid)
        caches.ids_entry.pop(tid, None)

    def _forget_processes(self) -> None:
        """The pid cursor wrapped: any tid may name another process now."""
        caches = self._caches
        for tid in list(caches.mem):
            self._close_mem(tid)
        caches.ids.clear()
        caches.peek_only.clear()

    def _forget_places(self) -> None:
        self._caches.cwd.clear()
        self._caches.root.clear()

    def _on_new_process(self, parent: int) -> None:
        if self._libc.ptrace(PTRACE_GETEVENTMSG, parent, 0, ctypes.addressof(self._message)):
            return
        child = self._message.value
        caches = self._caches
        # a new process starts where its parent is, as the same user (an exec
        # changes neither: set-id bits are ignored under the tracer); a
        # reused tid forgets what it was
        for table in (caches.cwd, caches.root, caches.ids):
            if parent in table:
                table[child] = table[parent]  # type: ignore[index]
            else:
                table.pop(child, None)
        self._close_mem(child)
        if parent in caches.seized:  # traced from birth (PTRACE_O_TRACEFORK)
            caches.seized.add(child)
        caches.peek_only.discard(child)
        caches.in_exit.discard(child)
        caches.ids_exit.discard(child)
        caches.injecting.pop(child, None)

    # -- a traced call -------------------------------------------------------------

    def _syscall_args(self, tid: int) -> tuple[int, tuple[int, ...]] | None:
        """The filter's code and the six arguments, or None."""
        if self._use_info:
            size = self._libc.ptrace(
                PTRACE_GET_SYSCALL_INFO, tid, len(self._info), ctypes.addressof(self._info)
            )
            if size >= _INFO.size:
                op, _arch, _ip, _sp, _nr, *rest = _INFO.unpack_from(self._info)
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
        registers = _I386_ARG_REGS if code >> 8 == Abi.I386 else _X86_64_ARG_REGS
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
        self._in_stop = True
        try:
            spec = self._observe_call(tid, code, args)
        finally:
            self._in_stop = False
        if tid in self._caches.injecting:
            return PTRACE_SYSCALL  # a signal handler's call, before the injected prctl
        if spec.changes_ids:
            self._caches.ids_exit.add(tid)
            return PTRACE_SYSCALL
        if spec.moves_cwd:
            if spec.name == "chroot":
                self._chrooted = True
            self._caches.in_exit.add(tid)
            return PTRACE_SYSCALL
        return PTRACE_CONT

    def _observe_call(self, tid: int, code: int, args: tuple[int, ...]) -> SyscallSpec:
        """Record the paths of a call the filter sent (`code`: its data)."""
        spec = SPECS[code & 0xFF]
        if spec.sockaddr:
            self._observe_socket(tid, spec, args)
            return spec
        for operand in spec.operands:
            self._observe(tid, spec, operand, args)
        if spec.operands and spec.operands[0].action is PathAction.EXEC:
            # an exec replaces the address space (a vfork child's is its
            # parent's until then) and makes it dumpable: read it afresh
            self._close_mem(tid)
            self._caches.peek_only.discard(tid)
        return spec

    def _on_syscall_stop(self, tid: int) -> int:
        """A syscall-entry or -exit stop the tracer asked for; the restart."""
        caches = self._caches
        if tid in caches.in_exit:  # chdir, fchdir, chroot done
            caches.in_exit.discard(tid)
            self._forget_places()
            return PTRACE_CONT
        stops_left = caches.ids_entry.get(tid)
        if stops_left is not None:  # seized at a set*id: is this its restart?
            if self._entering_set_id(tid):
                del caches.ids_entry[tid]
                caches.ids_exit.add(tid)
                return PTRACE_SYSCALL
            if stops_left <= 0:  # a signal handler that never returned to it
                del caches.ids_entry[tid]
                return PTRACE_CONT
            caches.ids_entry[tid] = stops_left - 1
            return PTRACE_SYSCALL
        if tid in caches.ids_exit:  # set*id done
            caches.ids_exit.discard(tid)
            caches.ids.pop(tid, None)
            return PTRACE_SYSCALL if self._inject_dumpable(tid) else PTRACE_CONT
        injection = caches.injecting.get(tid)
        if injection is None:
            return PTRACE_CONT
        if not injection.entered:
            # a signal handler may run (and make calls) before the prctl
            injection.entered = self._entering_prctl(tid)
            return PTRACE_SYSCALL
        del caches.injecting[tid]
        ctypes.memmove(self._regs, injection.saved_regs, ctypes.sizeof(self._regs))
        self._libc.ptrace(PTRACE_SETREGS, tid, 0, ctypes.addressof(self._regs))
        return PTRACE_CONT

    def _entering_set_id(self, tid: int) -> bool:
        """Whether a syscall stop is the entry to a set*id (x86_64 ABI)."""
        size = self._libc.ptrace(
            PTRACE_GET_SYSCALL_INFO, tid, len(self._info), ctypes.addressof(self._info)
        )
        if size < _ENTRY_INFO_SIZE:
            return False
        op, arch, _ip, _sp, number = _INFO.unpack_from(self._info)[:5]
        return (
            op == PTRACE_SYSCALL_INFO_ENTRY
            and arch == AUDIT_ARCH_X86_64
            and number in _X86_64_SET_ID_NUMBERS
        )

    def _entering_prctl(self, tid: int) -> bool:
        regs = self._regs
        if self._libc.ptrace(PTRACE_GETREGS, tid, 0, ctypes.addressof(regs)):
            return False
        return regs[_ORIG_RAX] == _X86_64_PRCTL and regs[_X86_64_ARG_REGS[0]] == PR_SET_DUMPABLE

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
        if regs[_RAX] >= 1 << 63:  # the call failed: nothing changed
            return False
        saved = bytes(regs)
        regs[_RAX] = _X86_64_PRCTL
        for register, value in zip(_X86_64_ARG_REGS, (PR_SET_DUMPABLE, 1, 0, 0, 0, 0), strict=True):
            regs[register] = value
        regs[_RIP] -= 2  # back onto the 2-byte `syscall` instruction
        if libc.ptrace(PTRACE_SETREGS, tid, 0, ctypes.addressof(regs)):
            return False
        self._caches.injecting[tid] = _Injection(saved)
        return True

    def _observe(
        self, tid: int, spec: SyscallSpec, operand: PathOperand, args: tuple[int, ...]
    ) -> None:
        address = args[operand.path_arg]
        name = None
        if operand.action is PathAction.EXEC and tid not in self._caches.mem and self._in_stop:
            # a new process's first call is often its exec, after which its
            # memory must be opened anew: read this one name word by word
            name = self._peek(tid, address, PATH_MAX, until_nul=True)
        if name is None:
            name = self._read_cstring(tid, address)
        if name is None and address:
            self.log.unresolved += 1  # the tracee's memory could not be read
        if not name:
            return
        flags = args[spec.flags_arg] & 0xFFFFFFFF if spec.flags_arg is not None else 0
        action = operand.action
        if spec.opens is OpenFlags.HOW:
            how = self._read_bytes(tid, args[2], 8)
            flags = int.from_bytes(how, "little") if len(how) == 8 else 0
        if spec.opens is not OpenFlags.NONE:
            if flags & O_CREAT:
                action = PathAction.CREATE
            elif flags & (O_WRONLY | O_RDWR | O_TRUNC):
                action = PathAction.WRITE
        follow = self._follows(operand.follow, flags) or name.endswith(b"/")
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
        log.add(key, _exists(path, follow))
        untraced = self.support.untraced_elf_machines
        if action is PathAction.EXEC and untraced and program_machine(path) in untraced:
            log.unobserved_programs.add(path)

    def _observe_socket(self, tid: int, spec: SyscallSpec, args: tuple[int, ...]) -> None:
        length = min(args[2] & 0xFFFFFFFF, 110)
        if length <= 2:
            return
        address = self._read_bytes(tid, args[1], length)
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

    def _follows(self, follow: Follow, flags: int) -> bool:
        if follow is Follow.ALWAYS:
            return True
        if follow is Follow.NEVER:
            return False
        if follow is Follow.UNLESS_AT_NOFOLLOW:
            return not flags & AT_SYMLINK_NOFOLLOW
        if follow is Follow.IF_AT_FOLLOW:
            return bool(flags & AT_SYMLINK_FOLLOW)
        if follow is Follow.UNLESS_O_NOFOLLOW:
            return not flags & self._o_nofollow
        return not flags & IN_DONT_FOLLOW

    # -- where names are --------------------------------------------------------------

    def _absolute(self, tid: int, name: bytes, dirfd: int) -> bytes | None:
        if name.startswith(b"/"):
            path = clean_absolute(name)
            if self._chrooted:
                root = self._place(tid, "root", self._caches.root)
                if root is None:
                    return None
                if root != b"/":
                    path = root + path if path != b"/" else root
            return path
        if dirfd == AT_FDCWD:
            base = self._place(tid, "cwd", self._caches.cwd)
        else:
            base = self._proc_link(tid, f"fd/{dirfd}")
        if base is None or not base.startswith(b"/"):
            return None
        return join_physical(base, name)

    def _place(self, tid: int, link: str, cache: dict[int, bytes]) -> bytes | None:
        if self._listener is not None:
            # a chdir on the listener has no exit stop to drop the cache at
            return self._proc_link(tid, link)
        known = cache.get(tid)
        if known is None:
            known = self._proc_link(tid, link)
            if known is not None:
                cache[tid] = known
        return known

    def _proc_link(self, tid: int, link: str) -> bytes | None:
        """readlink /proc/<tid>/<link>."""
        self.stats.proc_reads += 1
        return self._in_proc(tid, os.readlink, f"/proc/{tid}/{link}".encode())

    def _in_proc(self, tid: int, call: Callable[[bytes], _T], path: bytes) -> _T | None:
        """`call(path)` for a /proc/<tid> file. The kernel checks it against
        the caller's fs ids: for a tracee of another uid (and no
        CAP_SYS_PTRACE) the tracer's fs ids are set to the tracee's for the
        moment. The tracee's ids are cached (a child inherits its parent's,
        a set*id forgets them). None when it cannot be done."""
        caches = self._caches
        ids = caches.ids.get(tid)
        if ids is None or ids == self._own_ids:
            try:
                return call(path)
            except PermissionError:
                pass
            except OSError:
                return None
        for known in (True, False):
            if ids is None or not known:
                fresh = _proc_ids(tid)
                if fresh is None or fresh == ids:
                    return None
                ids = caches.ids[tid] = fresh
            self.stats.fsuid_switches += 1
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

    # -- the tracee's memory --------------------------------------------------------------

    def _read_cstring(self, tid: int, address: int) -> bytes | None:
        if address == 0:
            return None
        count = self._mem_read(tid, address, PATH_MAX)
        if count < 0:
            return self._peek(tid, address, PATH_MAX, until_nul=True)
        value = self._buffer.value
        if len(value) < count:
            return value
        if count == PATH_MAX:
            return None  # longer than PATH_MAX: the kernel refuses it too
        more = self._peek(tid, address + count, PATH_MAX - count, until_nul=True)
        return None if more is None else value[:count] + more

    def _read_bytes(self, tid: int, address: int, size: int) -> bytes:
        if address == 0:
            return b""
        count = self._mem_read(tid, address, size)
        if count < 0:
            return self._peek(tid, address, size, until_nul=False) or b""
        return self._buffer.raw[:count]

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
        caches = self._caches
        fd = caches.mem.get(tid)
        if fd is not None or tid in caches.peek_only or not self._use_proc_mem:
            return fd
        self.stats.mem_opens += 1
        fd = self._in_proc(tid, _open_read_only, f"/proc/{tid}/mem".encode())
        if fd is None:
            if self._may_keep(tid):
                caches.peek_only.add(tid)
            return None
        if len(caches.mem) >= MAX_MEM_FDS:
            for other in list(caches.mem):
                self._close_mem(other)
        caches.mem[tid] = fd
        return fd

    def _close_mem(self, tid: int) -> None:
        fd = self._caches.mem.pop(tid, None)
        if fd is not None:
            os.close(fd)

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
        for tid in list(self._caches.mem):
            self._close_mem(tid)

    def _peek(self, tid: int, address: int, size: int, *, until_nul: bool) -> bytes | None:
        """Read with PTRACE_PEEKDATA, one aligned word at a time (only a
        tracee in a ptrace stop can be read so)."""
        if not self._in_stop:
            return None
        self.stats.peek_reads += 1
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
        tracer = SyscallTracer(PathLog(limit=16), interpreter)
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
