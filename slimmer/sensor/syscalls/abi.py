"""What each traced system call does with paths, and its number in every
ABI the filter knows (x86_64, x32, i386, aarch64).

See docs/syscalls.md.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from enum import Enum, IntEnum

from slimmer.sensor.syscalls.kernel import (
    AT_SYMLINK_FOLLOW,
    AT_SYMLINK_NOFOLLOW,
    IN_DONT_FOLLOW,
    NOTIFY_KERNEL,
    O_NOFOLLOW_ARM64,
    O_NOFOLLOW_X86,
    PR_SET_SECCOMP,
    SECCOMP_MODE_FILTER,
    SECCOMP_SET_MODE_FILTER,
)
from slimmer.trace import PathAction

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
    # the filter sends the call only when these arguments (index, value of
    # the low 32 bits) hold
    when: tuple[tuple[int, int], ...] = ()
    filter_arg: int | None = None  # seccomp, prctl: the app's filter (struct sock_fprog *)


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
    # the app installs a seccomp filter of its own (see docs/syscalls.md)
    SyscallSpec("seccomp", when=((0, SECCOMP_SET_MODE_FILTER),), filter_arg=2),
    SyscallSpec(
        "prctl", when=((0, PR_SET_SECCOMP), (1, SECCOMP_MODE_FILTER)), filter_arg=2
    ),
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
    "setresgid": 119, "setfsuid": 122, "setfsgid": 123, "prctl": 157, "seccomp": 317,
}  # fmt: skip
X86_64_PRCTL = _X86_64_NUMBERS["prctl"]
# set*id calls are traced in the x86_64 ABI only: there the tracer can make
# a process that changed its ids dumpable again (see seize.py).
_SET_ID_CALLS = frozenset(spec.name for spec in SPECS if spec.changes_ids)
X86_64_SET_ID_NUMBERS = frozenset(_X86_64_NUMBERS[name] for name in _SET_ID_CALLS)

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
    "prctl": 172, "seccomp": 354,
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
    "prctl": 167, "seccomp": 277,
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

    abis: tuple[Abi, ...]  # the native one first
    # ELF machines this kernel runs natively in an ABI the filter does not
    # know (a foreign program under binfmt emulation makes native calls)
    untraced_elf_machines: frozenset[int]
    o_nofollow: int
    regs_fallback: bool  # PTRACE_GETREGS when PTRACE_GET_SYSCALL_INFO is missing


MACHINES: dict[str, MachineSupport] = {
    "x86_64": MachineSupport(
        (Abi.X86_64, Abi.X32, Abi.I386),
        frozenset(),
        O_NOFOLLOW_X86,
        regs_fallback=True,
    ),
    "aarch64": MachineSupport(
        (Abi.AARCH64,),
        frozenset({EM_ARM}),
        O_NOFOLLOW_ARM64,
        regs_fallback=False,
    ),
}


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


def follows(follow: Follow, flags: int, o_nofollow: int) -> bool:
    """Whether a call with these flags follows a final symlink (`o_nofollow`:
    the machine's O_NOFOLLOW)."""
    if follow is Follow.ALWAYS:
        return True
    if follow is Follow.NEVER:
        return False
    if follow is Follow.UNLESS_AT_NOFOLLOW:
        return not flags & AT_SYMLINK_NOFOLLOW
    if follow is Follow.IF_AT_FOLLOW:
        return bool(flags & AT_SYMLINK_FOLLOW)
    if follow is Follow.UNLESS_O_NOFOLLOW:
        return not flags & o_nofollow
    return not flags & IN_DONT_FOLLOW
