"""Bad input and hostile trees, without an engine: clear errors, nothing
lost, nothing from the host."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import tracemalloc
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slimmer.builder import StaleTrace, check_traces
from slimmer.cli import cli
from slimmer.context import copy_validated, write_rootfs_tar
from slimmer.errors import ExitCode, PathError
from slimmer.fileset import SelectionRequest, select_files
from slimmer.rootfs import RootFS
from slimmer.sensor.watch import TreeWatcher
from slimmer.trace import ImageConfig, Trace, TraceStatus


def test_unreachable_engine_is_one_line_with_a_hint(monkeypatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    result = CliRunner().invoke(cli, ["trace", "anything"])
    assert result.exit_code == ExitCode.ENGINE
    assert result.output.startswith(
        "slim: error: the Docker engine at unix:///nonexistent/docker.sock is not reachable "
        "(No such file or directory)"
    )
    assert "slim: hint:" in result.output and "engine.sh" in result.output


@pytest.mark.parametrize("option", ["--include", "--exclude"])
def test_invalid_patterns_are_usage_errors(option: str) -> None:
    result = CliRunner().invoke(cli, ["build", "img", "-t", "x", option, "etc/passwd"])
    assert result.exit_code == ExitCode.USAGE
    assert "not an absolute path" in result.output and "slim: hint:" in result.output


def test_incomplete_or_foreign_traces_are_refused_without_force() -> None:
    trace = Trace(
        image="a",
        image_id="sha256:a",
        config=ImageConfig(),
        command=("x",),
        user="",
        files=(),
        status=TraceStatus.PARTIAL,
        problems=("the inotify queue overflowed",),
    )
    with pytest.raises(StaleTrace, match=r"partial \(the inotify queue overflowed"):
        check_traces([trace], "a", "sha256:a", force=False)
    with pytest.raises(StaleTrace, match="is not of"):
        check_traces([trace], "b", "sha256:b", force=False)
    check_traces([trace], "b", "sha256:b", force=True)


def test_queue_overflow_marks_the_trace_incomplete(tmp_path: Path) -> None:
    """fs.inotify.max_queued_events is read when an instance is made: lower
    it just for that moment."""
    knob = Path("/proc/sys/fs/inotify/max_queued_events")
    before = knob.read_text()
    knob.write_text("16")
    try:
        watcher = TreeWatcher(())
    finally:
        knob.write_text(before)
    watcher.watch_tree(str(tmp_path))
    watcher.drain()
    for index in range(100):  # nobody reads yet: the queue of 16 overflows
        (tmp_path / f"f{index}").write_text("x")
    watcher.start()
    stats = watcher.stop()
    assert stats.overflow


def test_symlink_loops_end_with_a_note(tmp_path: Path) -> None:
    os.symlink("b", tmp_path / "a")
    os.symlink("a", tmp_path / "b")
    selection = select_files(RootFS(tmp_path), SelectionRequest(includes=["/a"]))
    (dropped,) = selection.dropped
    assert dropped.path == "/a" and "too many levels of symbolic links" in dropped.why


def test_host_files_never_reach_the_context(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "srv").mkdir(parents=True)
    os.symlink("/etc/passwd", root / "srv/pw")  # the image has no /etc/passwd
    os.symlink("../../../../../../../etc/hostname", root / "srv/up")
    selection = select_files(RootFS(root), SelectionRequest(includes=["/srv", "/srv/pw/x"]))
    out = io.BytesIO()
    write_rootfs_tar(RootFS(root), selection, out)
    data = out.getvalue()
    for host_file in ("/etc/passwd", "/etc/hostname"):
        content = Path(host_file).read_bytes().strip()
        assert content and content not in data
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        links = {m.name: m.linkname for m in tar.getmembers() if m.issym()}
    assert links == {"srv/pw": "/etc/passwd", "srv/up": "../../../../../../../etc/hostname"}


class CountingSink(io.RawIOBase):
    def __init__(self) -> None:
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.size += len(data)
        return len(data)


def test_large_files_are_streamed(tmp_path: Path) -> None:
    big = tmp_path / "srv/big.bin"
    big.parent.mkdir()
    with big.open("wb") as handle:  # 256 MiB of data (a sparse file would be tiny in the tar)
        for _ in range(256):
            handle.write(os.urandom(1 << 12) * 256)
    selection = select_files(RootFS(tmp_path), SelectionRequest(includes=["/srv"]))
    sink = CountingSink()
    tracemalloc.start()
    write_rootfs_tar(RootFS(tmp_path), selection, sink)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert sink.size > 256 << 20
    assert peak < 64 << 20, f"peak {peak >> 20} MiB"


# -- fuzz: random trees of files, dirs and symlinks ----------------------------

NAMES = st.sampled_from(["a", "b", "c", "..", ".", "etc", "x y", "caf\udce9", "n\nl"])
TARGETS = st.lists(NAMES, min_size=1, max_size=5).map("/".join) | st.lists(
    NAMES, min_size=1, max_size=4
).map(lambda parts: "/" + "/".join(parts))
ENTRIES = st.lists(
    st.tuples(
        st.lists(NAMES.filter(lambda n: n not in ("..", ".")), min_size=1, max_size=3),
        st.sampled_from(["file", "dir", "link"]),
        TARGETS,
    ),
    max_size=25,
)


def make_tree(base: Path, entries) -> Path:
    root = base / "root"
    root.mkdir()
    for parts, kind, target in entries:
        path = root.joinpath(*parts)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if kind == "file":
                path.write_bytes(os.fsencode("/".join(parts)))
            elif kind == "dir":
                path.mkdir(exist_ok=True)
            else:
                os.symlink(target, path)
        except OSError:
            continue
    return root


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(entries=ENTRIES, query=TARGETS)
def test_fuzz_resolution_never_leaves_the_root(tmp_path_factory, entries, query) -> None:
    root = make_tree(tmp_path_factory.mktemp("fuzz"), entries)
    fs = RootFS(root)
    try:
        resolved = fs.resolve(query)
    except PathError:
        return
    assert resolved.path.startswith("/") and "/../" not in resolved.path + "/"
    host = fs.host_path(resolved.path)
    assert os.path.realpath(host) == os.path.abspath(host)  # no link left in it
    assert os.path.abspath(host).startswith(str(root))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(entries=ENTRIES)
def test_fuzz_context_writer_is_total_and_deterministic(tmp_path_factory, entries) -> None:
    root = make_tree(tmp_path_factory.mktemp("fuzz"), entries)
    fs = RootFS(root)
    selection = select_files(fs, SelectionRequest(includes=["/" + p for p in os.listdir(root)]))
    first, second = io.BytesIO(), io.BytesIO()
    write_rootfs_tar(fs, selection, first)
    write_rootfs_tar(RootFS(root), selection, second)
    assert first.getvalue() == second.getvalue()
    copy_validated(io.BytesIO(first.getvalue()), selection, io.BytesIO())


_SAVER = """
import sys
from pathlib import Path
from slimmer.trace import ImageConfig, Trace
trace = Trace(image=sys.argv[2], image_id="sha256:1", config=ImageConfig(), command=("x",),
              user="", files=())
for _ in range(300):
    trace.save(Path(sys.argv[1]))
"""


def test_two_runs_saving_the_same_trace_never_clash(tmp_path: Path) -> None:
    """Two slim processes write .slim/<image>.trace.json at once: neither
    fails, and the file is always one whole trace."""
    target = tmp_path / "same.trace.json"
    root = Path(__file__).resolve().parents[2]
    savers = [
        subprocess.Popen([sys.executable, "-c", _SAVER, str(target), name], cwd=root)
        for name in ("first", "second")
    ]
    seen = set()
    while any(saver.poll() is None for saver in savers):
        if target.exists():
            seen.add(Trace.load(target).image)
    assert [saver.wait() for saver in savers] == [0, 0]
    assert Trace.load(target).image in {"first", "second"} and seen
    assert [p.name for p in tmp_path.iterdir()] == ["same.trace.json"]  # no temporaries left
