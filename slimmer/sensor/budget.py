"""The trace's paths are bounded in bytes, not in entries: an app that
names a few thousand long paths of bytes that are not UTF-8 (each byte a
six-character escape in JSON) made half a gigabyte of result under an
entry limit. Every path the sensor keeps for a trace (a file inotify saw,
a name the syscall layer saw, a program it could not observe) takes what
it will cost in the result from one budget; past it a path is counted, not
kept, and the host marks the trace partial. The budget also bounds what
the sensor holds in memory for them. Standard library only (the syscall
layer's launcher imports it)."""

from __future__ import annotations

import json
import os
import threading

# what a record costs in the result beside its path: the keys, the action
# or kind, the flags (an upper bound: an exact size would cost more to find)
RECORD_BYTES = 128


def path_cost(path: str | bytes) -> int:
    """The bytes a record of `path` takes in the result (ASCII JSON)."""
    text = os.fsdecode(path) if isinstance(path, bytes) else path
    return len(json.dumps(text)) + RECORD_BYTES


class ByteBudget:
    """A number of bytes, taken from by several threads (the tracer and the
    inotify reader)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def take(self, size: int) -> bool:
        """Take `size` bytes; False (and nothing taken) past the limit."""
        with self._lock:
            if self.used + size > self.limit:
                return False
            self.used += size
            return True
