"""Sparse files cost slim's tars no more than their data: the content
defines the map, the tars carry PAX 1.0 sparse members, and the host copies
them as they are, checked."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from slimmer.context import ContextError, FileDigests, copy_validated, write_rootfs_tar
from slimmer.fileset import SelectionRequest, select_files
from slimmer.rootfs import RootFS
from slimmer.sparse import BLOCK, SPARSE_MIN_HOLES, DataMap, data_map, sparse_member

MiB = 1 << 20
PIECES = {0: b"head", 5000: b"\0" * 10 + b"x", 100 * MiB: b"middle" * 3000}


def sparse_file(path: Path, size: int, pieces: dict[int, bytes], dense: bool = False) -> Path:
    """A file of `size` zeros with `pieces` written at their offsets: a hole
    where nothing was written, or (dense) every zero written to disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        if dense:
            for _ in range(size // MiB):
                handle.write(bytes(MiB))
            handle.write(bytes(size % MiB))
        handle.truncate(size)
        for offset, data in pieces.items():
            handle.seek(offset)
            handle.write(data)
    os.utime(path, (1_600_000_000, 1_600_000_000))
    return path


def layout_of(path: Path) -> DataMap:
    fd = os.open(path, os.O_RDONLY)
    try:
        return data_map(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def test_the_map_is_the_blocks_that_hold_data(tmp_path: Path) -> None:
    size = 200 * MiB + 123
    layout = layout_of(sparse_file(tmp_path / "f", size, {**PIECES, size - 3: b"end"}))
    middle = 100 * MiB
    assert layout.segments == (
        (0, 2 * BLOCK),  # "head" in block 0, "x" at 5010 in block 1
        (middle, 5 * BLOCK),  # 18000 bytes from a block boundary
        (size - 123, 123),  # the last, partial block
    )
    assert layout.sparse and layout.entries()[-1] == (size - 123, 123)


def test_the_map_does_not_depend_on_the_file_system(tmp_path: Path) -> None:
    holes = layout_of(sparse_file(tmp_path / "holes", 120 * MiB, PIECES))
    zeros = layout_of(sparse_file(tmp_path / "zeros", 120 * MiB, PIECES, dense=True))
    assert (
        os.stat(tmp_path / "zeros").st_blocks
        > 100 * MiB // 512
        > os.stat(tmp_path / "holes").st_blocks
    )
    assert holes == zeros


def test_files_without_enough_zeros_stay_plain(tmp_path: Path) -> None:
    assert layout_of(sparse_file(tmp_path / "z", 0, {})) == DataMap(0, ())
    random = tmp_path / "random"
    random.write_bytes(os.urandom(3 * MiB))
    assert layout_of(random).segments == ((0, 3 * MiB),)
    few = sparse_file(tmp_path / "few", SPARSE_MIN_HOLES, {0: b"x"})
    assert not layout_of(few).sparse
    empty = layout_of(sparse_file(tmp_path / "zeros", 10 * MiB, {}))
    assert empty.segments == () and empty.entries() == [(10 * MiB, 0)]


class BoundedSink(io.BytesIO):
    """Fails the test, instead of the machine, when a tar holds the zeros."""

    def write(self, data: bytes) -> int:  # type: ignore[override]
        assert self.tell() + len(data) < 16 * MiB, "the tar holds the file's zeros"
        return super().write(data)


def rootfs_tar(root: Path) -> tuple[object, bytes]:
    selection = select_files(RootFS(root), SelectionRequest(includes=["/data"]))
    out = BoundedSink()
    write_rootfs_tar(RootFS(root), selection, out)
    return selection, out.getvalue()


def test_a_2gib_sparse_file_costs_the_tar_only_its_data(tmp_path: Path) -> None:
    root = tmp_path / "root"
    big = sparse_file(root / "data/big", 2 << 30, {**PIECES, (2 << 30) - 4: b"tail"})
    selection, data = rootfs_tar(root)
    assert len(data) < 64 * 1024
    copied = BoundedSink()
    stats = copy_validated(io.BytesIO(data), selection, copied)  # type: ignore[arg-type]
    assert copied.getvalue() == data and stats.file_bytes == 2 << 30
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.getmember("data/big")
        assert member.isreg() and member.size == 2 << 30
        content = tar.extractfile(member)
        assert content is not None
        for offset, piece in PIECES.items():
            content.seek(offset)
            assert content.read(len(piece)) == piece
        content.seek((2 << 30) - 4)
        assert content.read() == b"tail"
    assert big.stat().st_size == 2 << 30


def test_gnu_tar_reads_the_sparse_member_back(tmp_path: Path) -> None:
    pieces = {0: b"head", 30 * MiB + 7: b"x" * 70_000, 64 * MiB - 1: b"!"}
    source = sparse_file(tmp_path / "root/data/big", 64 * MiB, pieces)
    _, data = rootfs_tar(tmp_path / "root")
    (tmp_path / "rootfs.tar").write_bytes(data)
    listing = subprocess.run(
        ["tar", "-tvf", str(tmp_path / "rootfs.tar")], capture_output=True, text=True, check=True
    ).stdout
    assert f"{64 * MiB} " in listing and "data/big" in listing and "GNUSparse" not in listing
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tar", "-xf", str(tmp_path / "rootfs.tar"), "-C", str(out)], check=True)
    digest = hashlib.sha256
    assert digest((out / "data/big").read_bytes()).digest() == digest(source.read_bytes()).digest()


def test_the_same_content_gives_the_same_tar(tmp_path: Path) -> None:
    first = sparse_file(tmp_path / "a/data/big", 80 * MiB, PIECES)
    second = sparse_file(tmp_path / "b/data/big", 80 * MiB, PIECES, dense=True)
    for path in (first.parent, second.parent):
        os.utime(path, (1_600_000_000, 1_600_000_000))
    assert rootfs_tar(tmp_path / "a")[1] == rootfs_tar(tmp_path / "b")[1]


def hostile_sparse(name: str, layout: DataMap, size: int, payload: bytes) -> bytes:
    """An archive with one sparse member whose map is `layout` (unchecked)."""
    member = tarfile.TarInfo(name)
    member.size, member.mode, member.mtime = size, 0o644, 1_600_000_000
    sparse = sparse_member(member, layout)
    data = layout.map_block() + payload
    sparse.size = len(data)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(sparse, io.BytesIO(data))
    return out.getvalue()


@pytest.mark.parametrize(
    "layout",
    [
        DataMap(SPARSE_MIN_HOLES * 4, ((4096, 10), (0, 10))),  # out of order
        DataMap(SPARSE_MIN_HOLES * 4, ((0, 100), (50, 10))),  # overlapping
        DataMap(SPARSE_MIN_HOLES * 4, ((SPARSE_MIN_HOLES * 4 - 5, 10),)),  # past the end
    ],
)
def test_a_bad_map_from_the_container_is_refused(tmp_path: Path, layout: DataMap) -> None:
    root = tmp_path / "root"
    sparse_file(root / "data/big", layout.size, {0: b"x"})
    selection, _ = rootfs_tar(root)
    archive = hostile_sparse("data/big", layout, layout.size, b"y" * layout.data_bytes)
    with pytest.raises(ContextError):
        copy_validated(io.BytesIO(archive), selection, io.BytesIO())  # type: ignore[arg-type]


def test_a_sparse_member_of_another_size_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    sparse_file(root / "data/big", 10 * MiB, {0: b"x"})
    selection, _ = rootfs_tar(root)
    archive = hostile_sparse("data/big", DataMap(20 * MiB, ((0, 1),)), 20 * MiB, b"x")
    with pytest.raises(ContextError, match="not the file that was selected"):
        copy_validated(io.BytesIO(archive), selection, io.BytesIO())  # type: ignore[arg-type]


def test_the_digest_of_a_sparse_member_is_the_whole_files(tmp_path: Path) -> None:
    root = tmp_path / "root"
    big = sparse_file(root / "data/big", 90 * MiB + 5, {**PIECES, 90 * MiB: b"end"})
    os.link(big, root / "data/link")
    selection, data = rootfs_tar(root)
    digests: dict[str, FileDigests] = {}
    copy_validated(io.BytesIO(data), selection, BoundedSink(), digests)  # type: ignore[arg-type]
    content = big.read_bytes()
    expected = FileDigests(hashlib.sha256(content).hexdigest(), hashlib.sha1(content).hexdigest())
    assert digests["/data/big"] == digests["/data/link"] == expected
