"""Layers by update risk: the split, the determinism that makes two images
of the same base share a layer's digest, and that the layers stacked give
back the image's rootfs."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from slimmer.context import write_rootfs_tar
from slimmer.fileset import SelectionRequest, select_files
from slimmer.layers import (
    DIRECTORY_MTIME,
    Granularity,
    LayerKind,
    LayerPolicy,
    RootfsSource,
    entries_from_rootfs_tar,
    plan_layers,
    with_generated,
    write_layer,
)
from slimmer.packages import Package, PackageManager
from slimmer.records import GeneratedFile
from slimmer.rootfs import Kind, RootFS, parents

LIBDIR = "/usr/lib/x86_64-linux-gnu"
LIBC = f"{LIBDIR}/libc.so.6"
LIBSSL = f"{LIBDIR}/libssl.so.3"
LIBCRYPTO = f"{LIBDIR}/libcrypto.so.3"
BIG = 300_000


def package(name: str) -> Package:
    return Package(PackageManager.DPKG, name, "1.0", "amd64", name, "1.0")


LIBC6, LIBSSL3 = package("libc6"), package("libssl3")
OWNERS = {LIBC: LIBC6, f"{LIBDIR}/libm.so.6": LIBC6, LIBSSL: LIBSSL3, LIBCRYPTO: LIBSSL3}
BASE = ("libc6",)


def make_root(base: Path, app: str, *, dir_mtime: int, libm: bool) -> Path:
    """An image root as the fat image of one app: the same libc and
    OpenSSL, its own app files, its own directory mtimes (RUN steps)."""
    root = base / app
    files = {
        LIBC: b"c" * BIG,
        LIBSSL: b"s" * 1000,
        LIBCRYPTO: b"k" * BIG,
        f"/opt/{app}/bin/{app}": app.encode() * 1000,
        "/etc/passwd": f"root:x:0:0::/root:/bin/sh\n{app}:x:1000:1000::/:/bin/sh\n".encode(),
    }
    if libm:
        files[f"{LIBDIR}/libm.so.6"] = b"m" * BIG
    for path, data in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        os.utime(target, (1_600_000_000, 1_600_000_000))
    os.link(root / f"opt/{app}/bin/{app}", root / f"opt/{app}/bin/{app}-alias")
    os.symlink("usr/lib", root / "lib")
    for directory in sorted({p for p in root.rglob("*") if p.is_dir() and not p.is_symlink()}):
        os.utime(directory, (dir_mtime, dir_mtime))
    return root


def rootfs_of(root: Path, includes: list[str]) -> bytes:
    fs = RootFS(root)
    selection = select_files(fs, SelectionRequest(includes=includes))
    out = io.BytesIO()
    write_rootfs_tar(fs, selection, out)
    return out.getvalue()


def layered(
    rootfs: bytes, policy: LayerPolicy, generated: dict[str, bytes] | None = None
) -> list[tuple[str, LayerKind, str, bytes]]:
    """(name, kind, tar digest, tar bytes) of each layer, bottom first."""
    entries, links = entries_from_rootfs_tar(io.BytesIO(rootfs))
    owners = dict(OWNERS)
    if generated:
        entries = with_generated(
            entries, [GeneratedFile(p, d, 0o644, mtime=5) for p, d in generated.items()]
        )
        owners.update({p: LIBSSL3 for p in generated})
    plan = plan_layers(entries, owners, BASE, policy, links)
    result = []
    with RootfsSource(io.BytesIO(rootfs), generated) as source:
        for layer in plan.layers:
            out = io.BytesIO()
            written = write_layer(layer, plan, source, out)
            result.append((layer.name, layer.kind, written.tar_digest, out.getvalue()))
    return result


def members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), encoding="utf-8", errors="surrogateescape") as tar:
        return tar.getmembers()


APP_INCLUDES = ["/opt", "/etc/passwd", LIBC, LIBSSL, LIBCRYPTO, "/lib"]


@pytest.fixture
def two_apps(tmp_path: Path) -> tuple[bytes, bytes]:
    one = make_root(tmp_path, "one", dir_mtime=1_700_000_000, libm=False)
    two = make_root(tmp_path, "two", dir_mtime=1_700_555_555, libm=True)
    return (
        rootfs_of(one, APP_INCLUDES),
        rootfs_of(two, [*APP_INCLUDES, f"{LIBDIR}/libm.so.6"]),
    )


def test_kinds_split_by_owner_and_path(two_apps: tuple[bytes, bytes]) -> None:
    layers = layered(two_apps[0], LayerPolicy(Granularity.KIND))
    names = {name: {m.name for m in members(data)} for name, _, _, data in layers}
    assert list(names) == [
        "os-base",
        "os-packages",
        "application",
        "configuration",
        "directories",
    ]
    assert LIBC.lstrip("/") in names["os-base"]
    assert {LIBSSL.lstrip("/"), LIBCRYPTO.lstrip("/")} <= names["os-packages"]
    assert "opt/one/bin/one" in names["application"]
    assert "lib" in names["application"]  # a link no package lists is the app's
    assert "etc/passwd" in names["configuration"]


def test_every_layer_holds_its_parents_with_one_header(two_apps: tuple[bytes, bytes]) -> None:
    headers: dict[str, bytes] = {}
    for _, kind, _, data in layered(two_apps[1], LayerPolicy(Granularity.FILE, BIG)):
        if kind is LayerKind.DIRECTORIES:
            continue
        found = members(data)
        names = [m.name for m in found]
        assert names == sorted(names)
        for member in found:
            for ancestor in parents("/" + member.name):
                assert ancestor.lstrip("/") in names, (member.name, ancestor)
            if member.isdir():
                assert member.mtime == DIRECTORY_MTIME
                header = member.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
                assert headers.setdefault(member.name, header) == header
            assert member.uname == member.gname == ""


def test_the_top_layer_restates_every_directory_as_the_image_has_it(
    two_apps: tuple[bytes, bytes],
) -> None:
    """Below, directories have mtime 0 (so layers are shared); the last
    layer holds every directory of the image with its own mtime and mode,
    which is what a container sees (overlayfs takes the topmost)."""
    *below, top = layered(two_apps[0], LayerPolicy(Granularity.FILE, BIG))
    assert top[1] is LayerKind.DIRECTORIES
    restated = members(top[3])
    assert restated and all(member.isdir() for member in restated)
    below_dirs = {m.name for _, _, _, data in below for m in members(data) if m.isdir()}
    assert {m.name for m in restated} == below_dirs
    assert {m.mtime for m in restated} == {1_700_000_000}
    rootfs = {m.name: m for m in members(two_apps[0])}
    for member in restated:
        assert (member.mode, member.uid, member.gid) == (
            rootfs[member.name].mode,
            rootfs[member.name].uid,
            rootfs[member.name].gid,
        )
    single = layered(two_apps[0], LayerPolicy(Granularity.SINGLE))
    assert [kind for _, kind, _, _ in single] == [LayerKind.IMAGE]


def test_two_images_share_the_layers_of_the_files_they_both_keep(
    two_apps: tuple[bytes, bytes],
) -> None:
    """Different directory mtimes, a different subset of libc6, other app
    files: the libc.so.6 and libcrypto layers have the same digest."""
    one = {
        name: diff for name, _, diff, _ in layered(two_apps[0], LayerPolicy(Granularity.FILE, BIG))
    }
    two = {
        name: diff for name, _, diff, _ in layered(two_apps[1], LayerPolicy(Granularity.FILE, BIG))
    }
    libc_layer = f"os-base:libc6:amd64:{LIBC}"
    crypto_layer = f"os-packages:libssl3:amd64:{LIBCRYPTO}"
    assert one[libc_layer] == two[libc_layer]
    assert one[crypto_layer] == two[crypto_layer]
    assert f"os-base:libc6:amd64:{LIBDIR}/libm.so.6" in two
    assert one["application"] != two["application"]
    # per-package layers cannot share libc6: the apps keep different subsets
    pkg_one = layered(two_apps[0], LayerPolicy(Granularity.PACKAGE, BIG))
    pkg_two = layered(two_apps[1], LayerPolicy(Granularity.PACKAGE, BIG))
    assert (
        dict((n, d) for n, _, d, _ in pkg_one)["os-base:libc6:amd64"]
        != dict((n, d) for n, _, d, _ in pkg_two)["os-base:libc6:amd64"]
    )


def test_same_input_same_bytes(two_apps: tuple[bytes, bytes]) -> None:
    policy = LayerPolicy(Granularity.FILE, BIG)
    assert layered(two_apps[0], policy) == layered(two_apps[0], policy)


def extract(layers: list[bytes], target: Path) -> dict[str, tuple[str, int, int, bytes | str]]:
    """Stack tars like the engine does, then describe the tree."""
    for data in layers:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            # Python 3.11.2 (Debian 12's) has no extraction filters (3.11.4+).
            safe = {"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}
            tar.extractall(target, **safe)
    tree = {}
    for path in sorted(target.rglob("*")):
        info = path.lstat()
        name = str(path.relative_to(target))
        if path.is_symlink():
            tree[name] = ("link", info.st_mode, info.st_uid, os.readlink(path))
        elif path.is_dir():
            tree[name] = ("dir", info.st_mode, info.st_uid, b"")
        else:
            tree[name] = ("file", info.st_mode, info.st_nlink, path.read_bytes())
    return tree


@pytest.mark.parametrize("granularity", list(Granularity))
def test_stacked_layers_are_the_rootfs(
    two_apps: tuple[bytes, bytes], tmp_path: Path, granularity: Granularity
) -> None:
    layers = [data for _, _, _, data in layered(two_apps[1], LayerPolicy(granularity, BIG))]
    assert extract(layers, tmp_path / "layered") == extract([two_apps[1]], tmp_path / "single")


def test_hard_links_stay_with_their_file(two_apps: tuple[bytes, bytes]) -> None:
    for _, _, _, data in layered(two_apps[0], LayerPolicy(Granularity.FILE, BIG)):
        names = {m.name: m for m in members(data)}
        if "opt/one/bin/one-alias" in names:
            alias = names["opt/one/bin/one-alias"]
            assert alias.islnk() and alias.linkname == "opt/one/bin/one"
            assert "opt/one/bin/one" in names
            break
    else:
        pytest.fail("the hard link is in no layer")


def test_generated_records_go_with_their_package(two_apps: tuple[bytes, bytes]) -> None:
    record = "/var/lib/dpkg/status.d/libssl3"
    layers = layered(two_apps[0], LayerPolicy(Granularity.PACKAGE, 1000), {record: b"Package: x\n"})
    (holder,) = [
        n for n, _, _, data in layers if record.lstrip("/") in {m.name for m in members(data)}
    ]
    assert holder == "os-packages:libssl3:amd64"
    names = {m.name: m for _, _, _, data in layers for m in members(data)}
    assert names["var/lib/dpkg/status.d"].isdir() and names["var/lib/dpkg/status.d"].mode == 0o755


def test_layer_count_is_capped(tmp_path: Path) -> None:
    root = tmp_path / "many"
    owners = {}
    for index in range(30):
        path = f"{LIBDIR}/lib{index}.so"
        (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / path.lstrip("/")).write_bytes(b"x" * (BIG + index))
        owners[path] = package(f"lib{index}")
    rootfs = rootfs_of(root, [LIBDIR])
    entries, links = entries_from_rootfs_tar(io.BytesIO(rootfs))
    plan = plan_layers(
        entries, owners, (), LayerPolicy(Granularity.FILE, BIG, max_layers=10), links
    )
    assert len(plan.layers) == 10
    kept = {e.path for layer in plan.layers for e in layer.entries if e.kind is Kind.FILE}
    assert kept == set(owners)
    # the largest files keep their own layers; the smallest were folded
    assert any(layer.name.endswith("lib29.so") for layer in plan.layers)
    assert not any(layer.name.endswith("lib0.so") for layer in plan.layers)
