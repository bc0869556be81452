"""The sensor's pure parts on plain directories: users, commands, exit
statuses, and the inotify watcher on a real tree of the host."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from slimmer.errors import NotFound
from slimmer.rootfs import RootFS
from slimmer.sensor.init import CommandNotFound, decode_status, find_command
from slimmer.sensor.protocol import RunConfig
from slimmer.sensor.users import resolve_user
from slimmer.sensor.watch import Access, TreeWatcher

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


def test_find_command_on_path(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    (bin_dir / "plain").write_text("not executable")
    env = {"PATH": f"/nonexistent:{bin_dir}"}
    assert find_command("tool", env, "/") == str(tool)
    assert find_command(str(tool), {}, "/") == str(tool)
    assert find_command("bin/tool", {}, str(tmp_path)) == str(tool)
    for missing in ("plain", "absent", "/bin/absent-tool"):
        with pytest.raises(CommandNotFound):
            find_command(missing, env, "/")


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
    config = RunConfig(mode="collect", paths=[odd], env={"A": "b=c"})
    again = RunConfig.from_json(config.to_json())
    assert again == config and os.fsencode(again.paths[0]) == b"/data/caf\xe9 \n name"


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
