"""The sensor's pure parts on plain directories: users, commands, exit
statuses, and the inotify watcher on a real tree of the host."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from slimmer.errors import NotFound
from slimmer.execpath import DEFAULT_PATH, find_program
from slimmer.fileset import SelectionRequest
from slimmer.protocol import CollectJob, DepsJob, RunConfig, TraceJob, TraceResult, decode_result
from slimmer.rootfs import RootFS
from slimmer.sensor.budget import ByteBudget, path_cost
from slimmer.sensor.init import decode_status
from slimmer.sensor.users import resolve_user
from slimmer.sensor.watch import Access, TreeWatcher
from slimmer.wire import WireError

PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\napp:x:4321:1234:app:/home/app:/bin/sh\nbad:x:notanumber:1::/:\n"
)
GROUP = "root:x:0:\ngrp:x:1234:\nextra:x:2345:app,other\nmore:x:3456:other,app\n"


@pytest.fixture
def image_root(tmp_path: Path) -> RootFS:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text(PASSWD)
    (tmp_path / "etc/group").write_text(GROUP)
    return RootFS(tmp_path)


@pytest.mark.parametrize(
    ("spec", "uid", "gid", "groups", "home"),
    [
        ("", 0, 0, (), "/root"),
        ("app", 4321, 1234, (2345, 3456), "/home/app"),
        ("4321", 4321, 1234, (2345, 3456), "/home/app"),
        ("app:extra", 4321, 2345, (3456,), "/home/app"),
        ("app:99", 4321, 99, (2345, 3456), "/home/app"),
        ("5000", 5000, 0, (), "/"),
        ("5000:5000", 5000, 5000, (), "/"),
    ],
)
def test_user_specs(image_root: RootFS, spec: str, uid: int, gid: int, groups, home: str) -> None:
    user = resolve_user(spec, image_root)
    assert (user.uid, user.gid, user.groups, user.home) == (uid, gid, groups, home)


@pytest.mark.parametrize("spec", ["nobody", "app:nogroup"])
def test_unknown_names_are_errors(image_root: RootFS, spec: str) -> None:
    with pytest.raises(NotFound):
        resolve_user(spec, image_root)


def test_find_program_follows_execvp(tmp_path: Path) -> None:
    """Inside the root: PATH order, an empty element is the workdir, a
    regular file without an exec bit (or a directory) is passed over, a name
    with a slash is taken as it is."""
    for directory in ("bin", "usr/bin", "work", "opt/dir/tool"):
        (tmp_path / directory).mkdir(parents=True)
    (tmp_path / "bin/tool").write_text("not executable")
    (tmp_path / "usr/bin/tool").write_text("#!/bin/sh\n")
    (tmp_path / "usr/bin/tool").chmod(0o755)
    (tmp_path / "work/here").write_text("#!/bin/sh\n")
    (tmp_path / "work/here").chmod(0o700)
    (tmp_path / "usr/bin/link").symlink_to("/usr/bin/tool")
    fs = RootFS(tmp_path)
    assert find_program(fs, "tool", "/bin:/usr/bin", "/") == "/usr/bin/tool"
    assert find_program(fs, "tool", "/opt/dir:/usr/bin", "/") == "/usr/bin/tool"
    assert find_program(fs, "link", "/usr/bin", "/") == "/usr/bin/link"  # not resolved
    assert find_program(fs, "here", "/nope::/bin", "/work") == "/work/here"
    assert find_program(fs, "work/here", None, "/") == "/work/here"
    assert find_program(fs, "/usr/bin/tool", "", "/") == "/usr/bin/tool"
    for missing in ("/bin/tool", "absent", "/bin/absent-tool", ""):
        assert find_program(fs, missing, "/bin:/usr/bin", "/") is None
    assert "/usr/bin" in DEFAULT_PATH.split(":")
    assert find_program(fs, "tool", None, "/") == "/usr/bin/tool"  # the default PATH


def test_decode_status_like_a_shell() -> None:
    exited = subprocess.run(["sh", "-c", "exit 3"])
    assert exited.returncode == 3
    pid = os.fork()
    if pid == 0:
        os.kill(os.getpid(), signal.SIGTERM)
        os._exit(0)
    _, raw = os.waitpid(pid, 0)
    assert decode_status(raw).status == 128 + signal.SIGTERM
    assert decode_status(raw).signal == signal.SIGTERM
    pid = os.fork()
    if pid == 0:
        os._exit(42)
    _, raw = os.waitpid(pid, 0)
    assert (decode_status(raw).status, decode_status(raw).signal) == (42, None)


def test_run_config_round_trips_odd_names() -> None:
    odd = os.fsdecode(b"/data/caf\xe9 \n name")
    for job in (
        DepsJob(paths=(odd,), env={"A": "b=c"}),
        CollectJob(selection=SelectionRequest(includes=(odd,), engine_mtime=5)),
        TraceJob(argv=(odd, "-x"), user="app:grp", stop_signal=3),
    ):
        config = RunConfig(sensor_dir="/.slim-00", job=job)
        again = RunConfig.from_json(config.to_json())
        assert again == config and again.mode.value == type(job).KIND
    again = RunConfig.from_json(
        RunConfig(sensor_dir="/.slim-0", job=DepsJob(paths=(odd,))).to_json()
    )
    assert isinstance(again.job, DepsJob) and os.fsencode(again.job.paths[0]) == os.fsencode(odd)


HEAD = '{"schema": "slim.sensor/1", "sensor_dir": "/.slim-0", "job": '


@pytest.mark.parametrize(
    "text",
    [
        HEAD + '{"kind": "deps", "paths": [], "extra": 1}}',
        HEAD + '{"kind": "nope"}}',
        HEAD + '{"kind": "deps", "paths": "/bin/ls"}}',
        HEAD + '{"kind": "trace", "argv": ["x"], "stop_signal": true}}',
        HEAD.replace("sensor/1", "sensor/0") + '{"kind": "inventory"}}',
    ],
)
def test_run_config_rejects_what_it_does_not_know(text: str) -> None:
    with pytest.raises(WireError):
        RunConfig.from_json(text)


def test_watcher_sees_opens_reads_lists_writes_and_new_dirs(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/conf").write_text("x")
    (tmp_path / "skip").mkdir()
    (tmp_path / "skip/secret").write_text("s")
    watcher = TreeWatcher((str(tmp_path / "skip"),))
    assert watcher.watch_tree(str(tmp_path)) == 2  # root and etc, not skip
    os.listdir(tmp_path / "etc")  # the sensor's own set-up
    watcher.drain()
    watcher.start()
    (tmp_path / "etc/conf").read_text()
    (tmp_path / "skip/secret").read_text()
    os.listdir(tmp_path / "etc")
    (tmp_path / "new/deeper").mkdir(parents=True)
    (tmp_path / "new/deeper/file").write_text("made")
    (tmp_path / "etc/conf").unlink()
    stats = watcher.stop()
    seen = watcher.seen
    assert seen[str(tmp_path / "etc/conf")] >= Access.OPENED | Access.READ | Access.DELETED
    assert Access.LISTED in seen[str(tmp_path / "etc")]
    assert Access.WRITTEN in seen[str(tmp_path / "etc")]  # something was deleted in it
    assert Access.CREATED in seen[str(tmp_path / "new")]
    assert Access.CREATED in seen[str(tmp_path / "new/deeper/file")]
    assert not any("skip" in path for path in seen)
    assert not stats.overflow and stats.watches >= 4


def test_the_files_it_keeps_are_bounded_in_bytes(tmp_path: Path) -> None:
    """What inotify sees takes its size in the result from the trace's
    budget (shared with the syscall log); past it paths are counted as
    dropped, and paths already kept still gather their accesses."""
    budget = ByteBudget(20 * path_cost(str(tmp_path / f"{'x' * 200}-00")))
    watcher = TreeWatcher((), budget)
    watcher.watch_tree(str(tmp_path))
    watcher.drain()
    watcher.start()
    for number in range(50):
        (tmp_path / f"{'x' * 200}-{number:02}").write_text("made")
    (tmp_path / f"{'x' * 200}-00").read_text()
    watcher.stop()
    assert 10 < len(watcher.seen) <= 20 and watcher.dropped >= 30
    assert watcher.seen[str(tmp_path / f"{'x' * 200}-00")] >= Access.CREATED | Access.READ
    assert budget.used <= budget.limit


def test_watch_limit_names_the_sysctl(tmp_path: Path) -> None:
    """A user namespace has its own inotify watch limit: set it to 5 there
    and watch a tree of 10 directories."""
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed")
    for index in range(10):
        (tmp_path / f"d{index}").mkdir()
    script = (
        "import sys\n"
        "from slimmer.sensor.watch import TreeWatcher, WatchLimitError\n"
        "open('/proc/sys/user/max_inotify_watches', 'w').write('5')\n"
        "try:\n"
        f"    TreeWatcher(()).watch_tree({str(tmp_path)!r})\n"
        "except WatchLimitError as exc:\n"
        "    print(exc)\n"
        "    sys.exit(3)\n"
    )
    result = subprocess.run(
        ["unshare", "--user", "--map-root-user", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 3, result.stderr
    assert "fs.inotify.max_user_watches" in result.stdout
    assert "sysctl -w fs.inotify.max_user_watches=" in result.stdout


def _result_text(files: list[dict[str, object]], program: str = "/bin/app") -> str:
    return json.dumps(
        {
            "schema": "slim.sensor/1",
            "result": {
                "kind": "trace",
                "program": program,
                "user": {"uid": 0, "gid": 0, "groups": []},
                "exit": {"status": 0, "signal": None},
                "watches": 1,
                "events": 1,
                "overflow": False,
                "setup_seconds": 0.1,
                "app_seconds": 0.1,
                "files": files,
                "syscalls": {"observed": False, "reason": "turned off"},
            },
        }
    )


def test_results_from_the_container_are_validated() -> None:
    good = _result_text([{"path": "/etc/passwd", "kind": "file", "access": ["opened"]}])
    assert isinstance(decode_result(good.encode()), TraceResult)
    bad = [
        _result_text([{"path": "etc/passwd", "kind": "file", "access": ["opened"]}]),
        _result_text([{"path": "/etc/\x00", "kind": "file", "access": ["opened"]}]),
        _result_text([{"path": "/" + "x" * 5000, "kind": "file", "access": ["opened"]}]),
        _result_text([{"path": "/a", "kind": "file", "access": ["sniffed"]}]),
        _result_text([], program="relative"),
        _result_text([{"path": "/a", "kind": "file", "access": ["opened"], "x": 1}]),
        '{"schema": "slim.sensor/1", "result": ' + "[" * 50_000 + "]" * 50_000 + "}",
        '{"schema": "slim.sensor/1", "result": {"kind": "failure", "reason": "pwned"}}',
        "not json at all",
    ]
    for text in bad:
        with pytest.raises(WireError):
            decode_result(text.encode())
