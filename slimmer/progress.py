"""Progress of slim's long steps (watching a tree of 60,000 directories,
collecting and copying 100 MB, sending a context, building), shown in one
place: a live bar on stderr when it is a terminal, a plain line every few
seconds otherwise (a CI log), nothing with -q.

The flows report figures with `update(step, done, total)` and `finish(step)`
from any thread; the command line chooses the display once (`use`).
"""

from __future__ import annotations

import logging
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol, TextIO

log = logging.getLogger(__name__)


class Unit(Enum):
    COUNT = "count"
    BYTES = "bytes"


@dataclass(frozen=True)
class Step:
    """A long step: what it is called and what it counts."""

    label: str
    unit: Unit
    noun: str = ""  # what a COUNT counts: "directories", "steps"


WATCH = Step("watching", Unit.COUNT, "directories")
COLLECT = Step("collecting files", Unit.BYTES)
COPY = Step("copying the files out", Unit.BYTES)
SEND = Step("sending the build context", Unit.BYTES)
BUILD = Step("building", Unit.COUNT, "steps")
PUSH = Step("pushing", Unit.BYTES)
SAVE = Step("writing the image", Unit.BYTES)


def amount(value: int, unit: Unit) -> str:
    if unit is Unit.COUNT:
        return f"{value:,}"
    size = float(value)
    for name in ("B", "kB", "MB", "GB"):
        if size < 1000 or name == "GB":
            return f"{size:.0f} {name}" if name == "B" else f"{size:.1f} {name}"
        size /= 1000
    raise AssertionError("unreachable")


def describe(step: Step, done: int, total: int | None) -> str:
    """'collecting files: 45.0 MB of 100.0 MB (45%)', 'watching: 23,456 directories'."""
    noun = f" {step.noun}" if step.noun else ""
    if total:
        shown = min(done, total)
        percent = 100 * shown // total
        return (
            f"{step.label}: {amount(shown, step.unit)} of {amount(total, step.unit)}{noun} "
            f"({percent}%)"
        )
    return f"{step.label}: {amount(done, step.unit)}{noun}"


class Display(Protocol):
    def update(self, step: Step, done: int, total: int | None) -> None: ...

    def finish(self, step: Step) -> None: ...


class Silent:
    """-q, and library use: no progress."""

    def update(self, step: Step, done: int, total: int | None) -> None:
        return

    def finish(self, step: Step) -> None:
        return


class PlainLines:
    """A log line when a step has run `first` seconds, then every `every`
    seconds: short steps stay quiet, long ones show they are alive."""

    def __init__(self, first: float = 2.0, every: float = 5.0) -> None:
        self.first = first
        self.every = every
        self._started: dict[Step, float] = {}
        self._said: dict[Step, float] = {}
        self._lock = threading.Lock()

    def update(self, step: Step, done: int, total: int | None) -> None:
        now = time.monotonic()
        with self._lock:
            started = self._started.setdefault(step, now)
            last = self._said.get(step)
            due = now - started >= self.first if last is None else now - last >= self.every
            if not due:
                return
            self._said[step] = now
        log.info("%s", describe(step, done, total))

    def finish(self, step: Step) -> None:
        with self._lock:
            self._started.pop(step, None)
            self._said.pop(step, None)


class LiveBar:
    """One line on a terminal, redrawn in place (at most `fps` times a
    second); log records are written above it (see `interrupt`)."""

    SPINNER = "|/-\\"

    def __init__(self, stream: TextIO | None = None, fps: float = 10.0) -> None:
        self._stream = stream
        self._interval = 1 / fps
        self._lock = threading.RLock()
        self._step: Step | None = None
        self._line = ""
        self._drawn = 0.0
        self._turn = 0

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stderr

    def _text(self, step: Step, done: int, total: int | None) -> str:
        width = shutil.get_terminal_size((80, 24)).columns
        figures = describe(step, done, total)
        if not total:
            self._turn += 1
            return f"{self.SPINNER[self._turn % 4]} {figures}"[: width - 1]
        bar_width = max(10, min(30, width - len(figures) - 4))
        filled = bar_width * min(done, total) // total
        return f"[{'#' * filled}{'.' * (bar_width - filled)}] {figures}"[: width - 1]

    def update(self, step: Step, done: int, total: int | None) -> None:
        now = time.monotonic()
        with self._lock:
            if step == self._step and now - self._drawn < self._interval:
                return
            self._step, self._drawn = step, now
            self._line = self._text(step, done, total)
            self._draw()

    def _draw(self) -> None:
        self.stream.write("\r\x1b[K" + self._line)
        self.stream.flush()

    def _clear(self) -> None:
        self.stream.write("\r\x1b[K")
        self.stream.flush()

    def finish(self, step: Step) -> None:
        with self._lock:
            if step != self._step:
                return  # another step's line is showing
            if self._line:
                self._clear()
            self._step, self._line, self._drawn = None, "", 0.0

    def interrupt(self, write: Callable[[], None]) -> None:
        """Write something else (a log record) without mangling the bar."""
        with self._lock:
            if self._line:
                self._clear()
            write()
            if self._line:
                self._draw()


_display: Display = Silent()


def use(display: Display) -> None:
    """Choose how progress is shown (the command line does, once)."""
    global _display
    _display = display


def current() -> Display:
    return _display


def update(step: Step, done: int, total: int | None = None) -> None:
    _display.update(step, done, total)


def finish(step: Step) -> None:
    _display.finish(step)
