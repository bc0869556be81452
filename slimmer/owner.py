"""Which process made a container, and whether it still runs.

Every container slim creates carries `io.slim.owner=<machine>/<pid>/<start>`:
this machine (its host name and boot id), the slim process's id and its
start time since boot (so a reused pid is not taken for it). `slim prune`
removes the containers of runs whose process is gone; it cannot know that
of a process on another machine, and leaves those.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from functools import cache

OWNER_LABEL = "io.slim.owner"
BOOT_ID = "/proc/sys/kernel/random/boot_id"


@dataclass(frozen=True)
class Owner:
    machine: str
    pid: int
    start: int  # clock ticks since boot (/proc/PID/stat field 22)

    def label(self) -> str:
        return f"{self.machine}/{self.pid}/{self.start}"

    @classmethod
    def parse(cls, text: str) -> Owner | None:
        machine, _, rest = text.rpartition("/")
        machine, _, pid = machine.rpartition("/")
        try:
            return cls(machine, int(pid), int(rest)) if machine else None
        except ValueError:
            return None


def this_machine() -> str:
    """The host name and boot id: a machine, between two reboots."""
    try:
        with open(BOOT_ID, encoding="ascii") as handle:
            boot = handle.read().strip()
    except OSError:
        boot = "?"
    return f"{socket.gethostname()}:{boot}"


def start_time(pid: int) -> int | None:
    """When a process started (clock ticks since boot); None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


@cache
def current_owner() -> str:
    """The owner label of this process's containers."""
    pid = os.getpid()
    return Owner(this_machine(), pid, start_time(pid) or 0).label()


def owner_gone(label: str) -> bool | None:
    """Whether the process named by an owner label has ended: True or
    False on this machine, None when it is another machine's (or the label
    is not one slim writes)."""
    owner = Owner.parse(label)
    if owner is None or owner.machine != this_machine():
        return None
    return start_time(owner.pid) != owner.start
