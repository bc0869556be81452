"""The files slim writes for the user are written as a Unix tool writes its
output: through symbolic links, into FIFOs and devices, a regular file
replaced whole; nothing slim did not make is ever replaced or removed.
Real slim processes; the devices are this test's own nodes (mknod), never
the host's /dev."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from slimmer.errors import ExitCode
from slimmer.trace import Trace
from tests.helpers.slimrun import SlimRun, run_slim

FULL = os.makedev(1, 7)  # /dev/full: every write fails with ENOSPC
NULL = os.makedev(1, 3)  # /dev/null

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mknod and /proc need root")


def _device(path: Path, number: int) -> Path:
    os.mknod(path, 0o666 | stat.S_IFCHR, number)
    return path


def _is_device(path: Path, number: int) -> bool:
    info = os.lstat(path)
    return stat.S_ISCHR(info.st_mode) and info.st_rdev == number


def _trace(image: str, *args: str) -> SlimRun:
    return run_slim("trace", image, "--until-exit", "--quiet-app", *args)


class FifoReader:
    """Reads a FIFO in a thread: everything, or only `limit` bytes before it
    closes its end (a reader that goes away)."""

    def __init__(self, path: Path, limit: int | None = None) -> None:
        os.mkfifo(path)
        self.path = path
        self.limit = limit
        self.data = b""
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with self.path.open("rb") as handle:
            self.data = handle.read() if self.limit is None else handle.read(self.limit)

    def join(self) -> bytes:
        self._thread.join(60)
        return self.data


@pytest.fixture
def batch_trace(fixture_image, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    image = fixture_image("batch")
    path = tmp_path / "batch.trace.json"
    made = _trace(image, "-o", str(path))
    assert made.exit_code == 0, made.describe()
    yield image, path


def test_trace_output_through_a_link(fixture_image, tmp_path: Path) -> None:
    """-o LINK writes the file the link names and leaves the link a link;
    a link to nothing yet makes its target."""
    image = fixture_image("batch")
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "made-by-slim.json")
    for path in (link, dangling):
        result = _trace(image, "-o", str(path))
        assert result.exit_code == 0, result.describe()
        assert path.is_symlink()
    assert Trace.load(target).image == image
    assert Trace.load(tmp_path / "made-by-slim.json").image == image


def test_trace_output_into_a_fifo(fixture_image, tmp_path: Path) -> None:
    image = fixture_image("batch")
    reader = FifoReader(tmp_path / "trace.fifo")
    result = _trace(image, "-o", str(reader.path))
    assert result.exit_code == 0, result.describe()
    assert json.loads(reader.join())["image"] == image
    assert stat.S_ISFIFO(os.lstat(reader.path).st_mode)


@needs_root
def test_trace_output_into_devices(fixture_image, tmp_path: Path) -> None:
    """A device is written into, never replaced: a full one fails the write
    (exit 7, and the device is still there), a null one takes it."""
    image = fixture_image("batch")
    full, null = _device(tmp_path / "full", FULL), _device(tmp_path / "null", NULL)
    failed = _trace(image, "-o", str(full))
    assert failed.exit_code == ExitCode.RESOURCE, failed.describe()
    assert "No space left on device" in failed.stderr and "Traceback" not in failed.stderr
    assert _is_device(full, FULL)
    written = _trace(image, "-o", str(null))
    assert written.exit_code == 0, written.describe()
    assert _is_device(null, NULL)


@needs_root
def test_an_output_nothing_can_be_made_in_fails_before_the_trace(fixture_image) -> None:
    """root passes access(2) for /proc, where no file can be made: slim
    finds out by making one, before any container runs."""
    result = _trace(fixture_image("batch"), "-o", "/proc/slim-test-output")
    assert result.exit_code == ExitCode.USAGE, result.describe()
    assert "/proc/slim-test-output cannot be written" in result.stderr
    assert "watching" not in result.stderr and "waiting for" not in result.stderr


@needs_root
def test_a_failed_context_write_removes_nothing_of_the_users(
    batch_trace: tuple[str, Path], tmp_path: Path
) -> None:
    """--context-only LINK where the link leads to a full device: the
    build fails (exit 7) and the link is still there, to the device."""
    image, trace = batch_trace
    full = _device(tmp_path / "full", FULL)
    link = tmp_path / "context.tar"
    link.symlink_to(full)
    result = run_slim("build", image, "--trace", str(trace), "--context-only", str(link))
    assert result.exit_code == ExitCode.RESOURCE, result.describe()
    assert "No space left on device" in result.stderr
    assert link.is_symlink() and _is_device(full, FULL)
    assert [p.name for p in tmp_path.iterdir() if ".slim-tmp" in p.name] == []


def test_a_reader_that_goes_away_is_not_a_full_disk(
    batch_trace: tuple[str, Path], tmp_path: Path
) -> None:
    """--context-only FIFO whose reader stops after 100 bytes: the error
    says the reader stopped (no "free some space"), the FIFO stays."""
    image, trace = batch_trace
    reader = FifoReader(tmp_path / "context.fifo", limit=100)
    result = run_slim("build", image, "--trace", str(trace), "--context-only", str(reader.path))
    assert len(reader.join()) == 100
    assert result.exit_code == ExitCode.ERROR, result.describe()
    assert "stopped reading" in result.stderr and "space" not in result.stderr
    assert "Traceback" not in result.stderr
    assert stat.S_ISFIFO(os.lstat(reader.path).st_mode)


def test_report_and_sbom_through_links(batch_trace: tuple[str, Path], tmp_path: Path) -> None:
    image, trace = batch_trace
    outputs = {}
    for name in ("report", "sbom"):
        target = tmp_path / f"{name}.real.json"
        link = tmp_path / f"{name}.json"
        link.symlink_to(target)
        outputs[name] = (link, target)
    result = run_slim(
        "build", image, "--trace", str(trace),
        "--context-only", str(tmp_path / "c.tar"),
        "--report", str(outputs["report"][0]), "--sbom", str(outputs["sbom"][0]),
    )  # fmt: skip
    assert result.exit_code == 0, result.describe()
    for link, target in outputs.values():
        assert link.is_symlink() and json.loads(target.read_text())


@needs_root
def test_a_report_that_does_not_fit_leaves_the_old_one(
    batch_trace: tuple[str, Path], tmp_path: Path, tiny_disk: Path
) -> None:
    """The disk fills while the report is written: the report that was
    there is still there, whole, and no temporary file is left."""
    image, trace = batch_trace
    report = tiny_disk / "report.json"
    report.write_text('{"old": true}')
    with (tiny_disk / "filler").open("wb", buffering=0) as out, contextlib.suppress(OSError):
        while True:  # until the disk is full
            out.write(b"x" * 512)
    result = run_slim(
        "build", image, "--trace", str(trace), "--context-only", str(tmp_path / "c.tar"),
        "--report", str(report), "--sbom", str(tmp_path / "sbom.json"),
        "--include", "/bin",  # some 400 files: a report larger than a block
    )  # fmt: skip
    assert result.exit_code == ExitCode.RESOURCE, result.describe()
    assert "cannot write the report" in result.stderr and "Traceback" not in result.stderr
    assert report.read_text() == '{"old": true}'
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["filler", "report.json"]
