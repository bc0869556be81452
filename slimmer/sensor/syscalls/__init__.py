"""Syscall-level path observation: every path the app's processes name to
the kernel, with ptrace and a seccomp-bpf filter, without privileges.

inotify reports opens, reads and writes of real files; it has no event for
stat(2), access(2), readlink(2), an open that fails with ENOENT, or a
directory symlink the app goes through by name. This package sees those.
The design, its reasons and its limits are in docs/syscalls.md.

    kernel     the kernel's numbers and struct layouts, the process's libc
    abi        what each traced call does with paths; its number in each ABI
    bpf        the seccomp filter program
    pathlog    the record of what was named; how names are made absolute
    launcher   the app's first process: user, filter, exec
    listener   the seccomp listener, the SIGCHLD wakeup, the pid cursor
    memory     reading a tracee's memory and /proc links
    seize      set*id: keeping processes that drop privileges readable
    tracer     SyscallTracer: the loop that ties them together

Standard library and ctypes only: it runs in the sensor's bundle, and its
launcher runs it with `-I -S`.
"""

from slimmer.sensor.syscalls.abi import (
    AUDIT_ARCH_AARCH64,
    AUDIT_ARCH_I386,
    AUDIT_ARCH_X86_64,
    MACHINES,
    SPEC_INDEX,
    SPECS,
    SYSCALL_NUMBERS,
    X32_SYSCALL_BIT,
    Abi,
    Follow,
    SyscallSpec,
    call_codes,
    notify_supported,
)
from slimmer.sensor.syscalls.bpf import may_return, seccomp_filter
from slimmer.sensor.syscalls.kernel import (
    SECCOMP_RET_ALLOW,
    SECCOMP_RET_TRACE,
    SECCOMP_RET_USER_NOTIF,
)
from slimmer.sensor.syscalls.launcher import LaunchMode, LaunchRequest, launcher_main
from slimmer.sensor.syscalls.pathlog import (
    DEFAULT_LOG_BYTES,
    PathLog,
    PathRecord,
    TracerStats,
    clean_absolute,
    join_physical,
    program_machine,
)
from slimmer.sensor.syscalls.tracer import (
    Refusal,
    SyscallTracer,
    TracingSupport,
    TracingUnavailable,
    probe_support,
)
from slimmer.trace import PathAction

__all__ = [
    "AUDIT_ARCH_AARCH64",
    "AUDIT_ARCH_I386",
    "AUDIT_ARCH_X86_64",
    "DEFAULT_LOG_BYTES",
    "MACHINES",
    "SECCOMP_RET_ALLOW",
    "SECCOMP_RET_TRACE",
    "SECCOMP_RET_USER_NOTIF",
    "SPECS",
    "SPEC_INDEX",
    "SYSCALL_NUMBERS",
    "X32_SYSCALL_BIT",
    "Abi",
    "Follow",
    "LaunchMode",
    "LaunchRequest",
    "PathAction",
    "PathLog",
    "PathRecord",
    "Refusal",
    "SyscallSpec",
    "SyscallTracer",
    "TracerStats",
    "TracingSupport",
    "TracingUnavailable",
    "call_codes",
    "clean_absolute",
    "join_physical",
    "launcher_main",
    "may_return",
    "notify_supported",
    "probe_support",
    "program_machine",
    "seccomp_filter",
]
