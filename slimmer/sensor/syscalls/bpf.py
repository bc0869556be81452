"""The seccomp filter: a classic-BPF program that sends the path-taking
calls of every ABI the machine runs to the tracer (as ptrace stops or on a
seccomp listener) and allows the rest.

See docs/syscalls.md.
"""

from __future__ import annotations

import ctypes
import struct

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
    SyscallSpec,
)
from slimmer.sensor.syscalls.kernel import (
    AT_EMPTY_PATH,
    SECCOMP_RET_ALLOW,
    SECCOMP_RET_TRACE,
    SECCOMP_RET_USER_NOTIF,
)

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
BPF_CLASS_RET = 0x06  # BPF_RET | BPF_K is a constant; | BPF_A, the accumulator
BPF_MAXINSNS = 4096
SECCOMP_RET_ACTION_FULL = 0xFFFF0000


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
    elif spec.when:
        # every (argument, value) must hold, else ALLOW (the last instruction)
        body = []
        allow_at = 2 * len(spec.when) + 1
        for arg, value in spec.when:
            body.append(_insn(BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_ARGS + 8 * arg))
            jeq_at = len(body)
            body.append(_insn(BPF_JMP_JEQ_K, 0, allow_at - jeq_at - 1, value))
        body += [trace, allow]
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


def may_return(program: bytes, action: int) -> bool:
    """Whether a classic-BPF program (struct sock_filter[]) may return
    `action` (SECCOMP_RET_TRACE, say): a RET of that constant, or a RET of
    the accumulator, whose value is not known here."""
    for offset in range(0, len(program) - 7, 8):
        code, _jt, _jf, k = struct.unpack_from("<HBBI", program, offset)
        if code & 0x07 != BPF_CLASS_RET:
            continue
        if code != BPF_RET_K or k & SECCOMP_RET_ACTION_FULL == action:
            return True
    return False


class SockFprog(ctypes.Structure):
    """struct sock_fprog: what seccomp(2) and prctl(PR_SET_SECCOMP) take."""

    _fields_ = (("length", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def pack_filter(program: bytes) -> SockFprog:
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = SockFprog(len(program) // 8, ctypes.addressof(buffer))
    fprog._buffer = buffer  # type: ignore[attr-defined]  # keep it alive
    return fprog
