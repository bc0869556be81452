"""The record of what the app's processes named: the first observation of
each (path, action, follow), bounded; how names are made absolute; and the
tracer's own counters.

See docs/syscalls.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from slimmer.sensor.budget import ByteBudget, path_cost
from slimmer.trace import PathAction


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


DEFAULT_LOG_BYTES = 64 * 1024 * 1024


class PathLog:
    """The first observation of each (path, action, follow), bounded in
    bytes by `budget` (shared with the rest of the trace, see
    slimmer/sensor/budget.py), or by `limit_bytes` of its own."""

    def __init__(
        self, limit_bytes: int = DEFAULT_LOG_BYTES, budget: ByteBudget | None = None
    ) -> None:
        self.budget = budget if budget is not None else ByteBudget(limit_bytes)
        self.first: dict[tuple[bytes, PathAction, bool], bool] = {}
        self.dropped = 0  # observations not kept because the budget was spent
        self.unresolved = 0  # names unreadable, or relative with no readable cwd or dirfd
        self.unobserved_programs: set[bytes] = set()  # exec'd in an ABI not traced
        # seccomp filters the app installed that may return SECCOMP_RET_TRACE
        self.trace_filters = 0

    def add(self, key: tuple[bytes, PathAction, bool], existed: bool) -> None:
        if not self.budget.take(path_cost(key[0])):
            self.dropped += 1
            return
        self.first[key] = existed

    def add_unobserved(self, program: bytes) -> None:
        """A program exec'd in an ABI the filter does not know."""
        if program not in self.unobserved_programs:
            if not self.budget.take(path_cost(program)):
                self.dropped += 1
                return
            self.unobserved_programs.add(program)

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
            "trace_filters": self.trace_filters,
        }


@dataclass
class TracerStats:
    """How much work the tracer did (for tests and benchmarks)."""

    stops: int = 0  # seccomp stops
    notifications: int = 0  # calls heard of on the seccomp listener
    events: int = 0  # every ptrace stop
    peek_reads: int = 0  # strings read word by word
    mem_opens: int = 0  # /proc/<tid>/mem files opened
    proc_reads: int = 0  # readlinks of /proc/<tid>/cwd or fd
    fsuid_switches: int = 0
    attaches: int = 0  # processes seized at a set*id call (on a listener)


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


def exists(path: bytes, follow: bool) -> bool:
    """Whether the name resolves, following a final symlink only with `follow`."""
    try:
        os.stat(path, follow_symlinks=follow)
    except (OSError, ValueError):
        return False
    return True


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
