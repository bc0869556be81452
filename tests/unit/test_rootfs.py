"""Path resolution confined to a root, checked against the kernel: for trees
without absolute links the host's own resolution is the oracle; for the
others, a chrooted realpath is."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from slimmer.errors import PathError
from slimmer.rootfs import RootFS, SymlinkHop


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "usr/lib/x86_64-linux-gnu").mkdir(parents=True)
    (tmp_path / "usr/lib/x86_64-linux-gnu/libc.so.6").write_text("libc")
    (tmp_path / "usr/bin").mkdir()
    (tmp_path / "usr/bin/tool").write_text("tool")
    os.symlink("usr/lib", tmp_path / "lib")
    os.symlink("usr/bin", tmp_path / "bin")
    (tmp_path / "etc").mkdir()
    return tmp_path


def chroot_realpath(root: Path, path: str) -> str:
    """The kernel's answer: realpath inside a chroot of the root."""
    script = (
        "import os,sys; os.chroot(sys.argv[1]); os.chdir('/'); print(os.path.realpath(sys.argv[2]))"
    )
    out = subprocess.run(
        ["python3", "-c", script, str(root), path], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def test_relative_directory_links_are_followed_and_recorded(root: Path) -> None:
    resolved = RootFS(root).resolve("/lib/x86_64-linux-gnu/libc.so.6")
    assert resolved.path == "/usr/lib/x86_64-linux-gnu/libc.so.6"
    assert resolved.hops == (SymlinkHop("/lib", "usr/lib"),)
    assert resolved.path == "/" + os.path.relpath(
        os.path.realpath(root / "lib/x86_64-linux-gnu/libc.so.6"), root
    )


def test_absolute_link_restarts_at_the_root_not_the_host(root: Path) -> None:
    os.symlink("/etc/shadow", root / "etc/evil")
    (root / "etc/shadow").write_text("image shadow")
    fs = RootFS(root)
    resolved = fs.resolve("/etc/evil")
    assert resolved.path == "/etc/shadow"
    assert fs.read_text("/etc/evil") == "image shadow"
    assert resolved.path == chroot_realpath(root, "/etc/evil")


def test_absolute_link_to_a_host_file_missing_in_the_image_is_not_found(root: Path) -> None:
    os.symlink("/etc/hostname", root / "etc/leak")
    with pytest.raises(PathError) as caught:
        RootFS(root).read_bytes("/etc/leak")
    assert caught.value.errno == errno.ENOENT


def test_dotdot_chains_stay_inside(root: Path) -> None:
    os.symlink("../../../../../../etc/passwd", root / "usr/bin/up")
    (root / "etc/passwd").write_text("image passwd")
    fs = RootFS(root)
    assert fs.resolve("/usr/bin/up").path == "/etc/passwd"
    assert fs.resolve("/../../..").path == "/"
    assert fs.read_text("/usr/bin/up") == "image passwd"


def test_dotdot_is_physical_after_a_directory_link(root: Path) -> None:
    (root / "opt/vendor/x/lib").mkdir(parents=True)
    (root / "opt/vendor/x/private").mkdir()
    (root / "opt/vendor/x/private/p").write_text("p")
    (root / "opt/app").mkdir()
    os.symlink("../vendor/x/lib", root / "opt/app/lib")
    fs = RootFS(root)
    resolved = fs.resolve("/opt/app/lib/../private/p")
    assert resolved.path == "/opt/vendor/x/private/p"
    assert resolved.path == chroot_realpath(root, "/opt/app/lib/../private/p")


def test_symlink_loop_is_eloop_without_hanging(root: Path) -> None:
    os.symlink("b", root / "etc/a")
    os.symlink("a", root / "etc/b")
    with pytest.raises(PathError) as caught:
        RootFS(root).resolve("/etc/a")
    assert caught.value.errno == errno.ELOOP


def test_forty_hops_resolve_and_forty_one_do_not(root: Path) -> None:
    (root / "etc/end").write_text("x")
    for index in range(41):
        target = "end" if index == 0 else f"l{index - 1}"
        os.symlink(target, root / f"etc/l{index}")
    fs = RootFS(root)
    assert fs.resolve("/etc/l39").path == "/etc/end"
    with pytest.raises(PathError) as caught:
        fs.resolve("/etc/l40")
    assert caught.value.errno == errno.ELOOP
    with pytest.raises(OSError) as kernel:  # the host kernel agrees on the limit
        os.stat(root / "etc/l40")
    assert kernel.value.errno == errno.ELOOP


def test_no_follow_keeps_the_final_link(root: Path) -> None:
    os.symlink("/usr/bin/tool", root / "etc/tool-link")
    resolved = RootFS(root).resolve("/etc/tool-link", follow=False)
    assert resolved.path == "/etc/tool-link" and resolved.hops == ()


def test_file_used_as_directory_is_enotdir(root: Path) -> None:
    with pytest.raises(PathError) as caught:
        RootFS(root).resolve("/usr/bin/tool/x")
    assert caught.value.errno == errno.ENOTDIR


def test_relative_paths_start_at_cwd(root: Path) -> None:
    assert RootFS(root).resolve("tool", cwd="/bin").path == "/usr/bin/tool"


def test_non_utf8_names_survive(root: Path) -> None:
    raw = b"caf\xe9-\xff"
    (root / "etc").joinpath(os.fsdecode(raw)).write_text("bytes")
    os.symlink(os.fsdecode(b"caf\xe9-\xff"), root / "etc" / os.fsdecode(b"ln\xfe"))
    fs = RootFS(root)
    resolved = fs.resolve(os.fsdecode(b"/etc/ln\xfe"))
    assert os.fsencode(resolved.path) == b"/etc/" + raw
    assert fs.read_text(resolved.path) == "bytes"


def test_fifo_is_refused_without_blocking(root: Path) -> None:
    os.mkfifo(root / "etc/pipe")
    with pytest.raises(PathError) as caught:
        RootFS(root).read_bytes("/etc/pipe")
    assert caught.value.errno == errno.EINVAL


def test_missing_root_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PathError):
        RootFS(tmp_path / "absent")
