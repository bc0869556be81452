"""Cleaning up that a second Ctrl-C cannot cut short: terminating signals
are held while slim removes what it made, and delivered right after."""

from __future__ import annotations

import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HELD_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


@contextmanager
def signals_held() -> Iterator[None]:
    """Hold Ctrl-C, SIGTERM and SIGHUP for the duration (main thread only;
    other threads cannot take them anyway)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextmanager
def scratch_directory(prefix: str) -> Iterator[Path]:
    """A private temporary directory (in TMPDIR), removed on the way out
    however slim leaves, and never half-removed."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        with signals_held():
            shutil.rmtree(path, ignore_errors=True)
