"""The traced container as the image: what the app made is hidden, the
directories it wrote into keep their stat from before, and any change to a
file the image has is told (then the collect runs in a fresh container).

The tree is a real root built with gcc; the "app" works on it while a real
TreeWatcher (inotify) watches, as in the sensor."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from slimmer.context import write_rootfs_tar
from slimmer.fileset import SelectionRequest, select_files
from slimmer.rootfs import Kind, RootFS, Trees
from slimmer.sensor.pristine import (
    PristineView,
    TreeChanges,
    hard_linked,
    links_in,
    why_not_intact,
)
from slimmer.sensor.watch import TreeWatcher
from slimmer.trace import Access, PathAction, TracedFile
from tests.helpers.elfroot import ElfRoot


@pytest.fixture
def image(elfroot: ElfRoot) -> ElfRoot:
    elfroot.glibc_base()
    elfroot.lib("libapp.so.1", "/usr/lib/x86_64-linux-gnu")
    elfroot.exe("/opt/app/bin/app", needed=("libapp.so.1",))
    elfroot.write("/opt/app/conf/app.conf", "x=1\n")
    elfroot.write("/opt/app/conf/other.conf", "y=2\n")
    elfroot.mkdir("/opt/app/logs")
    elfroot.mkdir("/var/cache")
    elfroot.write("/etc/passwd", "root:x:0:0::/root:/bin/sh\n")
    return elfroot


def row(path: str, *access: str) -> TracedFile:
    return TracedFile(path, Kind.FILE, tuple(Access(a) for a in access))


# What the app does in the trace below, and what the trace then says.
APP_TRACE = (
    row("/opt/app/bin/app", "opened", "read", "executed"),
    row("/opt/app/conf/app.conf", "opened", "read"),
    row("/opt/app/logs/app.log", "opened", "written", "created"),
    row("/opt/app/conf/app.conf.new", "opened", "written", "created"),
    row("/var/cache/app/state", "opened", "written", "created"),
    row("/opt/app/run.pid", "opened", "written", "created", "deleted"),
)


def run_app(root: Path) -> None:
    """What a well-behaved app does: logs, a cache dir, a pid file it
    removes, a new file beside its config (app-content would take it), a
    link to its config (links to kept files would take it), a library in a
    search dir."""
    (root / "opt/app/logs/app.log").write_text("started\n")
    (root / "opt/app/conf/app.conf.new").write_text("x=2\n")
    (root / "var/cache/app").mkdir()
    (root / "var/cache/app/state").write_text("s")
    (root / "opt/app/run.pid").write_text("1")
    (root / "opt/app/run.pid").unlink()
    os.symlink("/opt/app/conf/app.conf", root / "etc/app.conf")
    (root / "usr/lib/x86_64-linux-gnu/libextra.so.1").write_bytes(b"\x7fELF")


def watched(root: Path, act: Callable[[Path], None]) -> TreeWatcher:
    watcher = TreeWatcher((), track_changes=True)
    watcher.watch_tree(str(root))
    watcher.drain()
    watcher.start()
    act(root)
    watcher.stop()
    return watcher


def request() -> SelectionRequest:
    return SelectionRequest(traced=APP_TRACE, entrypoint=("/opt/app/bin/app",))


def tar_of(fs: RootFS, request: SelectionRequest) -> bytes:
    out = io.BytesIO()
    write_rootfs_tar(fs, select_files(fs, request), out)
    return out.getvalue()


def test_the_traced_tree_selects_and_tars_as_the_image_did(image: ElfRoot) -> None:
    root = image.path
    as_image = select_files(RootFS(root), request())
    image_tar = tar_of(RootFS(root), request())
    watcher = watched(root, run_app)
    changes = watcher.changes()
    assert changes.changed == () and not changes.overflow
    assert f"{root}/var/cache/app" in changes.made and f"{root}/etc/app.conf" in changes.made
    # The sensor's root is "/"; here the tree is under a directory.
    made = frozenset(path.removeprefix(str(root)) for path in changes.made)
    before = {path.removeprefix(str(root)) or "/": info for path, info in watcher.before.items()}
    links = [path.removeprefix(str(root)) for path in watcher.links]
    image_links = sorted(RootFS(root).symlinks(Trees.of(())))
    assert image_links and "/etc/app.conf" in image_links  # the app's link is there now
    assert sorted(links) == [link for link in image_links if link != "/etc/app.conf"]
    for view in (PristineView(root, made, before), PristineView(root, made, before, links)):
        assert select_files(view, request()) == as_image
        assert tar_of(view, request()) == image_tar
    # Seen without the view, the app's files and times are there.
    assert select_files(RootFS(root), request()) != as_image


def test_made_paths_are_not_there_and_written_dirs_keep_their_stat(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d/kept").write_text("k")
    before = {"/d": os.lstat(tmp_path / "d")}
    (tmp_path / "d/made").write_text("m")
    (tmp_path / "d/made-dir").mkdir()
    (tmp_path / "d/made-dir/inner").write_text("i")
    os.utime(tmp_path / "d", (1, 1))
    view = PristineView(tmp_path, frozenset({"/d/made", "/d/made-dir"}), before)
    assert view.listdir("/d") == ["kept"]
    assert not view.exists("/d/made") and not view.exists("/d/made-dir/inner")
    with pytest.raises(FileNotFoundError):
        view.listdir("/d/made-dir")
    assert view.lstat("/d").st_mtime_ns == before["/d"].st_mtime_ns != 1
    assert view.read_text("/d/kept") == "k"


@pytest.mark.parametrize(
    "change",
    [
        lambda root: (root / "opt/app/conf/other.conf").write_text("changed"),
        lambda root: os.chmod(root / "opt/app/conf/other.conf", 0o600),
        lambda root: os.utime(root / "opt/app/conf/other.conf", (5, 5)),
        lambda root: (root / "opt/app/conf/other.conf").unlink(),
        lambda root: os.rename(root / "opt/app/conf/other.conf", root / "opt/app/conf/moved"),
        lambda root: os.setxattr(root / "opt/app/conf/other.conf", "user.x", b"1"),
    ],
    ids=["write", "chmod", "utime", "delete", "rename", "xattr"],
)
def test_a_change_to_a_file_of_the_image_is_told(
    image: ElfRoot, change: Callable[[Path], None]
) -> None:
    changes = watched(image.path, change).changes()
    assert f"{image.path}/opt/app/conf/other.conf" in changes.changed
    why = why_not_intact(
        changes, pid1=True, links_made=(), unresolved=0, slim_writes=(), made_with_links=()
    )
    assert why is not None and "which the image has" in why


def test_a_new_file_renamed_over_an_image_file_is_a_change(image: ElfRoot) -> None:
    def sed_i(root: Path) -> None:  # what sed -i does
        (root / "opt/app/conf/sedXYZ").write_text("x=3\n")
        os.rename(root / "opt/app/conf/sedXYZ", root / "opt/app/conf/app.conf")

    changes = watched(image.path, sed_i).changes()
    assert changes.changed == (f"{image.path}/opt/app/conf/app.conf",)


def test_a_hard_link_to_an_image_file_is_told(image: ElfRoot) -> None:
    def link(root: Path) -> None:
        os.link(root / "opt/app/conf/other.conf", root / "var/cache/other")

    changes = watched(image.path, link).changes()
    assert changes.changed == ()  # inotify sees only a new name
    assert hard_linked(changes.made) == [f"{image.path}/var/cache/other"]
    why = why_not_intact(
        changes,
        pid1=True,
        links_made=(),
        unresolved=0,
        slim_writes=(),
        made_with_links=hard_linked(changes.made),
    )
    assert why is not None and "hard link" in why


def test_what_else_keeps_the_collect_out_of_the_traced_container() -> None:
    clean = TreeChanges(frozenset({"/usr/libexec/slim"}), (), False)

    def why(changes: TreeChanges = clean, **given: object) -> str | None:
        options: dict[str, object] = {
            "pid1": True,
            "links_made": (),
            "unresolved": 0,
            "slim_writes": (),
            "made_with_links": (),
        }
        options.update(given)
        return why_not_intact(changes, **options)  # type: ignore[arg-type]

    assert why() is None
    assert "PID 1" in str(why(pid1=False))
    assert "lost events" in str(why(TreeChanges(frozenset(), (), True)))
    unwatched = TreeChanges(frozenset(), (), False, unwatched=3)
    assert "3 directories of the image could not be watched" in str(why(unwatched))
    assert "/etc/x" in str(why(links_made=links_in([("/etc/x", PathAction.LINK_FROM)])))
    assert links_in([("/etc/x", PathAction.OPEN)]) == []
    assert "not read, or not kept" in str(why(unresolved=2))
    assert "/usr/libexec/slim/dumb-init" in str(why(slim_writes=("/usr/libexec/slim/dumb-init",)))
