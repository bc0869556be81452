"""The pieces that wire issue 14 into slim build, on plain directories:
--strip while the rootfs tar is written, the init put in place, layer tars
that keep sparse files and extended attributes, the Dockerfile's ADDs,
package records' times, and what the host accepts from the sensor."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from slimmer import wire
from slimmer.builder import BuildOptions
from slimmer.context import ContextError, copy_validated, write_rootfs_tar
from slimmer.dockerfile import render_dockerfile
from slimmer.errors import UsageError
from slimmer.fileset import Selection, SelectionError, SelectionRequest, select_files
from slimmer.layers import Granularity, LayerPolicy, RootfsSource, plan_image, write_layer
from slimmer.packages import (
    FileRecord,
    KeptPackage,
    KeptPackages,
    Package,
    PackageManager,
)
from slimmer.protocol import (
    CollectResult,
    InventoryJob,
    ResultFile,
    RunConfig,
    SensorLayout,
    StripJob,
    StrippedFile,
    StripSummary,
    check_result,
)
from slimmer.records import dated_records
from slimmer.rootfs import RootFS
from slimmer.runner import run_dir_tar
from slimmer.sensor.collect import place_file, protection, with_sizes
from slimmer.strip import plan_strip, strip_elf
from slimmer.trace import ImageConfig
from tests.unit.test_sparse import MiB, sparse_file

PROGRAM = '#include <stdio.h>\nint main(void) { puts("hello from the app"); return 3; }\n'


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """An unstripped executable (debug info, symbol table)."""
    if shutil.which("gcc") is None:
        pytest.fail("gcc is needed (apt-get install gcc)")
    directory = tmp_path_factory.mktemp("program")
    (directory / "main.c").write_text(PROGRAM)
    target = directory / "app"
    subprocess.run(["gcc", "-g", "-o", str(target), str(directory / "main.c")], check=True)
    return target.read_bytes()


def package(name: str) -> Package:
    return Package(PackageManager.DPKG, name, "1.0-1", "amd64", name, "1.0-1")


def tree(root: Path, program: bytes) -> RootFS:
    for path in ("opt/app/bin/app", "opt/app/bin/checked", "usr/bin/tool"):
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(program)
        target.chmod(0o755)
    os.link(root / "opt/app/bin/app", root / "opt/app/bin/app-alias")
    (root / "opt/app/data.txt").write_text("not ELF\n")
    return RootFS(root)


def test_strip_writes_stripped_files_the_host_accepts(tmp_path: Path, program: bytes) -> None:
    fs = tree(tmp_path / "root", program)
    selection = select_files(fs, SelectionRequest(includes=("/opt", "/usr/bin/tool")))
    kept = KeptPackages(
        manager=PackageManager.DPKG,
        packages=(
            KeptPackage(
                package("tool"),
                (FileRecord("/usr/bin/tool", "/usr/bin/tool", False, "0" * 32),),
            ),
        ),
    )
    protected = protection(kept, StripJob(protect=("/opt/app/bin/check*",)))
    paths = [e.path for e in selection.entries if e.kind.value == "file"]
    plan = plan_strip(fs, paths, protected)
    assert sorted(plan.results) == ["/opt/app/bin/app", "/opt/app/bin/app-alias"]
    assert dict(plan.protected) == {
        "/usr/bin/tool": "the package record of tool has its digest",
        "/opt/app/bin/checked": "--strip-except /opt/app/bin/check*",
    }
    expected = strip_elf(program)
    assert plan.results["/opt/app/bin/app"].new_size == expected.new_size < len(program)

    sized = with_sizes(selection, plan)
    out = io.BytesIO()
    write_rootfs_tar(fs, sized, out, plan)
    digests: dict[str, str] = {}
    copied = io.BytesIO()
    copy_validated(io.BytesIO(out.getvalue()), sized, copied, digests)  # sizes check out
    with tarfile.open(fileobj=io.BytesIO(copied.getvalue())) as tar:
        members = {m.name: m for m in tar.getmembers()}
        app = tar.extractfile("opt/app/bin/app").read()  # type: ignore[union-attr]
        assert tar.extractfile("usr/bin/tool").read() == program  # type: ignore[union-attr]
    assert app == expected.output(program)
    assert members["opt/app/bin/app-alias"].islnk()
    assert members["opt/app/bin/checked"].size == len(program)
    binary = tmp_path / "stripped"
    binary.write_bytes(app)
    binary.chmod(0o755)
    done = subprocess.run([str(binary)], capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (3, "hello from the app\n")
    # the selection the host is given says the stripped size: an unstripped
    # member would be refused
    with pytest.raises(ContextError, match="not the file that was selected"):
        unstripped = io.BytesIO()
        write_rootfs_tar(fs, selection, unstripped)
        copy_validated(io.BytesIO(unstripped.getvalue()), sized, io.BytesIO())


def test_the_init_is_put_in_place_without_changing_the_image(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    os.utime(root / "usr", (1_600_000_000, 1_600_000_000))
    fs = RootFS(root)
    assert place_file(fs, "/usr/libexec/slim/dumb-init", b"\x7fELF init", 1_700_000_000) is None
    placed = root / "usr/libexec/slim/dumb-init"
    assert placed.read_bytes() == b"\x7fELF init" and placed.stat().st_mode & 0o777 == 0o755
    for made in (placed, root / "usr/libexec", root / "usr/libexec/slim"):
        assert made.stat().st_mtime == 1_700_000_000
    assert (root / "usr").stat().st_mtime == 1_600_000_000  # the image's own keeps its time
    again = place_file(fs, "/usr/libexec/slim/dumb-init", b"x", 0)
    assert again is not None and "already has" in again.message


def test_the_init_is_not_put_through_a_link(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr").mkdir(parents=True)
    (root / "elsewhere").mkdir()
    os.symlink("../elsewhere", root / "usr/libexec")
    refused = place_file(RootFS(root), "/usr/libexec/slim/dumb-init", b"x", 0)
    assert refused is not None and "/usr/libexec" in refused.message
    assert list((root / "elsewhere").iterdir()) == []


def rootfs_with_sparse_and_xattrs(tmp_path: Path) -> tuple[Selection, bytes, Path]:
    root = tmp_path / "root"
    sparse_file(root / "data/big.img", 20 * MiB, {0: b"head", 10 * MiB: b"middle"})
    (root / "data/notes.txt").write_text("notes\n")
    os.setxattr(root / "data/notes.txt", "user.origin", b"\x00binary\xff")
    fs = RootFS(root)
    selection = select_files(fs, SelectionRequest(includes=("/data",)))
    out = io.BytesIO()
    write_rootfs_tar(fs, selection, out)
    copied = io.BytesIO()
    copy_validated(io.BytesIO(out.getvalue()), selection, copied)
    return selection, copied.getvalue(), root


@pytest.mark.parametrize("granularity", [Granularity.SINGLE, Granularity.FILE])
def test_layers_keep_sparse_files_and_extended_attributes(
    tmp_path: Path, granularity: Granularity
) -> None:
    selection, rootfs, root = rootfs_with_sparse_and_xattrs(tmp_path)
    empty = KeptPackages(manager=None, packages=())
    with RootfsSource(io.BytesIO(rootfs)) as source:
        plan = plan_image(
            selection.entries, empty, (), source.hard_links(), LayerPolicy(granularity)
        )
        layers = []
        for layer in plan.layers:
            out = io.BytesIO()
            write_layer(layer, plan, source, out)
            layers.append(out.getvalue())
    members = {}
    for data in layers:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for member in tar.getmembers():
                handle = tar.extractfile(member) if member.isreg() else None
                members[member.name] = (member, handle.read() if handle else None)
    big, content = members["data/big.img"]
    assert big.sparse is not None and sum(len(layer) for layer in layers) < MiB
    assert content == (root / "data/big.img").read_bytes()
    notes, _ = members["data/notes.txt"]
    assert notes.pax_headers["SCHILY.xattr.user.origin"].encode("utf-8", "surrogateescape") == (
        b"\x00binary\xff"
    )


def test_one_add_per_layer_under_slims_names() -> None:
    config = ImageConfig(cmd=("/app",))
    names = ["layer000.tar", "layer001.tar", "layer002.tar"]
    lines = render_dockerfile(config, "scratch", {}, names).text.splitlines()
    assert lines[:4] == ["FROM scratch", *(f"ADD {name} /" for name in names)]
    for bad in ("../etc.tar", "layer1.tar", "x.tar\nRUN id"):
        with pytest.raises(ValueError, match="not a name slim gives"):
            render_dockerfile(config, "scratch", {}, [bad])


def test_records_are_as_old_as_their_packages_newest_kept_file() -> None:
    def kept_package(name: str, paths: list[str]) -> KeptPackage:
        return KeptPackage(package(name), tuple(FileRecord(p, p, False, "0" * 32) for p in paths))

    kept = KeptPackages(
        manager=PackageManager.DPKG,
        packages=(kept_package("libc6", ["/lib/a", "/lib/b"]), kept_package("zlib1g", ["/lib/z"])),
    )
    records = {
        r.path: r.mtime for r in dated_records(kept, {"/lib/a": 5, "/lib/b": 9, "/lib/z": 7})
    }
    assert records == {
        "/var/lib/dpkg/status.d/libc6": 9,
        "/var/lib/dpkg/status.d/libc6.md5sums": 9,
        "/var/lib/dpkg/status.d/zlib1g": 7,
        "/var/lib/dpkg/status.d/zlib1g.md5sums": 7,
    }


def test_the_host_refuses_stripped_sizes_that_do_not_add_up(tmp_path: Path, program: bytes) -> None:
    fs = tree(tmp_path / "root", program)
    selection = select_files(fs, SelectionRequest(includes=("/opt/app/bin/app",)))
    size = next(e.size for e in selection.entries if e.path == "/opt/app/bin/app")
    empty = KeptPackages(manager=None, packages=())

    def result(stripped: StrippedFile) -> bytes:
        summary = StripSummary(stripped=(stripped,))
        return wire.dumps(
            ResultFile(result=CollectResult(selection=selection, packages=empty, strip=summary))
        ).encode()

    check_result(
        wire.loads(ResultFile, result(StrippedFile("/opt/app/bin/app", size * 2, size, 3))).result
    )
    for forged in (
        StrippedFile("/opt/app/bin/app", size, size + 1, 3),  # not the selected size
        StrippedFile("/opt/other", size * 2, size, 3),  # not selected at all
        StrippedFile("/opt/app/bin/app", size - 1, size, 3),  # grew
    ):
        with pytest.raises(wire.WireError):
            check_result(wire.loads(ResultFile, result(forged)).result)


def test_run_files_go_into_the_run_dir_only() -> None:
    layout = SensorLayout.new()
    config = RunConfig(sensor_dir=layout.root, job=InventoryJob())
    data = run_dir_tar(layout, config, {"dumb-init": b"\x7fELF"})
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.extractfile(layout.init_binary.lstrip("/")).read() == b"\x7fELF"  # type: ignore[union-attr]
    for name in ("../x", "a/b", "", "config.json"):
        with pytest.raises(ValueError):
            run_dir_tar(layout, config, {name: b""})


def test_strip_except_needs_strip_and_absolute_globs() -> None:
    with pytest.raises(UsageError, match="--strip-except is for --strip"):
        BuildOptions(tags=("t",), strip_except=("/opt/*",))
    with pytest.raises(SelectionError, match="not an absolute path"):
        BuildOptions(tags=("t",), strip=True, strip_except=("opt/*",))
    assert BuildOptions(tags=("t",), strip=True, strip_except=("/opt/*",)).strip_except == (
        "/opt/*",
    )
