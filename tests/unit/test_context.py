"""The rootfs tar, its validation and the context tar."""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from slimmer.context import ContextError, copy_validated, write_context, write_rootfs_tar
from slimmer.fileset import SelectionRequest, select_files
from slimmer.rootfs import RootFS


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "srv/data").mkdir(parents=True)
    (root / "srv/data/a.txt").write_text("aaaa")
    os.link(root / "srv/data/a.txt", root / "srv/data/hard.txt")
    (root / "srv/bin").mkdir()
    (root / "srv/bin/tool").write_text("#!tool")
    os.chown(root / "srv/bin/tool", 0, 1234)
    os.chmod(root / "srv/bin/tool", 0o4750)  # after chown, which clears setuid
    os.chown(root / "srv/data/a.txt", 4321, 1234)
    os.symlink("data/a.txt", root / "srv/link")
    odd = os.fsdecode(b"caf\xe9\nname")
    (root / "srv/data" / odd).write_text("odd")
    for path in root.rglob("*"):
        os.utime(path, (1_600_000_000, 1_600_000_000), follow_symlinks=False)
    return root


def rootfs_bytes(root: Path):
    fs = RootFS(root)
    selection = select_files(fs, SelectionRequest(includes=["/srv"]))
    out = io.BytesIO()
    write_rootfs_tar(fs, selection, out)
    return selection, out.getvalue()


def test_rootfs_tar_keeps_metadata_and_hard_links(tree: Path) -> None:
    _, data = rootfs_bytes(tree)
    with tarfile.open(fileobj=io.BytesIO(data), encoding="utf-8", errors="surrogateescape") as tar:
        members = {m.name: m for m in tar.getmembers()}
    tool = members["srv/bin/tool"]
    assert (tool.mode, tool.uid, tool.gid) == (0o4750, 0, 1234)
    a, hard = members["srv/data/a.txt"], members["srv/data/hard.txt"]
    assert (a.uid, a.gid, a.mtime) == (4321, 1234, 1_600_000_000)
    assert hard.islnk() and hard.linkname == "srv/data/a.txt"
    assert members["srv/link"].issym() and members["srv/link"].linkname == "data/a.txt"
    assert (
        os.fsencode("srv/data/" + os.fsdecode(b"caf\xe9\nname")).decode("utf-8", "surrogateescape")
        in members
    )
    assert all(m.uname == "" and m.gname == "" for m in members.values())
    assert list(members) == sorted(members)


def test_rootfs_tar_is_deterministic(tree: Path) -> None:
    first = rootfs_bytes(tree)[1]
    assert rootfs_bytes(tree)[1] == first
    os.utime(tree / "srv/data/a.txt", (1_700_000_000, 1_700_000_000))
    assert rootfs_bytes(tree)[1] != first  # the tar does follow its input


def test_copy_validated_accepts_what_was_selected(tree: Path) -> None:
    selection, data = rootfs_bytes(tree)
    out = io.BytesIO()
    stats = copy_validated(io.BytesIO(data), selection, out)
    assert out.getvalue() == data  # the sensor's tar is already normalised
    assert stats.members == len([e for e in selection.entries if e.path != "/"])


def hostile(selection, add) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        add(tar)
    return out.getvalue()


def file_member(name: str, data: bytes = b"x", **fields) -> tuple[tarfile.TarInfo, io.BytesIO]:
    member = tarfile.TarInfo(name)
    member.size = len(data)
    for key, value in fields.items():
        setattr(member, key, value)
    return member, io.BytesIO(data)


@pytest.mark.parametrize(
    "make",
    [
        lambda tar: tar.addfile(*file_member("/etc/shadow")),
        lambda tar: tar.addfile(*file_member("srv/../../etc/shadow")),
        lambda tar: tar.addfile(*file_member("srv/not-selected")),
        lambda tar: tar.addfile(*file_member("srv/data/a.txt", b"much longer than selected")),
        lambda tar: tar.addfile(
            file_member("srv/data/hard.txt", b"", type=tarfile.LNKTYPE, linkname="etc/shadow")[0]
        ),
        lambda tar: tar.addfile(
            file_member("srv/link", b"", type=tarfile.SYMTYPE, linkname="/etc/shadow")[0]
        ),
        lambda tar: tar.addfile(file_member("srv/bin/tool", b"", type=tarfile.CHRTYPE)[0]),
    ],
)
def test_copy_validated_refuses_hostile_members(tree: Path, make) -> None:
    selection, _ = rootfs_bytes(tree)
    with pytest.raises(ContextError):
        copy_validated(io.BytesIO(hostile(selection, make)), selection, io.BytesIO())


def test_missing_members_are_an_error(tree: Path) -> None:
    selection, _ = rootfs_bytes(tree)
    with pytest.raises(ContextError, match="missing"):
        copy_validated(io.BytesIO(hostile(selection, lambda tar: None)), selection, io.BytesIO())


def test_context_tar_starts_with_a_plain_dockerfile(tree: Path) -> None:
    _, rootfs = rootfs_bytes(tree)
    out = io.BytesIO()
    write_context("FROM scratch\n", io.BytesIO(rootfs), len(rootfs), out)
    data = out.getvalue()
    assert data[:10] == b"Dockerfile" and data[257:262] == b"ustar"
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.getnames() == ["Dockerfile", "rootfs.tar"]
        assert all(isinstance(m.mtime, int) for m in tar.getmembers())


CAP_NET_BIND_SERVICE = bytes.fromhex("0100000200040000000000000000000000000000")  # v2, +ep


def test_file_capabilities_and_user_xattrs_travel_and_nothing_else(tree: Path) -> None:
    """security.capability and user.* go into the tar as PAX records (what
    ADD applies); the host accepts exactly the selected ones."""
    tool = tree / "srv/bin/tool"
    os.setxattr(tool, "security.capability", CAP_NET_BIND_SERVICE)
    os.setxattr(tree / "srv/data/a.txt", "user.origin", b"\x00binary\xff")
    selection, data = rootfs_bytes(tree)
    entries = {e.path: e for e in selection.entries}
    assert [x.name for x in entries["/srv/bin/tool"].xattrs] == ["security.capability"]
    assert "/srv/bin/tool has file capabilities (kept)" in selection.warnings
    out = io.BytesIO()
    copy_validated(io.BytesIO(data), selection, out)
    with tarfile.open(
        fileobj=io.BytesIO(out.getvalue()), encoding="utf-8", errors="surrogateescape"
    ) as tar:
        members = {m.name: m for m in tar.getmembers()}
    headers = members["srv/bin/tool"].pax_headers
    capability = headers["SCHILY.xattr.security.capability"].encode("utf-8", "surrogateescape")
    assert capability == CAP_NET_BIND_SERVICE
    origin = members["srv/data/a.txt"].pax_headers["SCHILY.xattr.user.origin"]
    assert origin.encode("utf-8", "surrogateescape") == b"\x00binary\xff"
    # an attribute the selection did not name is refused
    forged = replace(
        selection,
        entries=tuple(
            replace(e, xattrs=()) if e.path == "/srv/bin/tool" else e for e in selection.entries
        ),
    )
    with pytest.raises(ContextError, match="extended attributes"):
        copy_validated(io.BytesIO(data), forged, io.BytesIO())
