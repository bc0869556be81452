"""Work that grows with the image grows linearly: sixteen times the files
takes about sixteen times the CPU, never 256 (what a scan of every kept
path per directory did, 60 times here). Measured in CPU time of this process, so
other work on the machine does not count; the bound leaves room for noise."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from slimmer.appcontent import content_roots
from slimmer.fileset import SelectionRequest, select_files
from slimmer.packages import PackageDB
from slimmer.rootfs import Kind, RootFS
from slimmer.trace import Access, TracedFile

LINEAR_BOUND = 48  # 16x the input: linear ~16, quadratic ~256


def cpu_seconds(work: Callable[[], object], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        work()
        best = min(best, time.process_time() - started)
    return best


def libraries_behind_a_link(root: Path, dirs: int, per_dir: int) -> SelectionRequest:
    """/lib -> usr/lib with `dirs` directories of files, all kept; the base
    image has /lib and each /lib/dN as real directories (--base)."""
    traced = []
    for number in range(dirs):
        directory = root / "usr/lib" / f"d{number}"
        directory.mkdir(parents=True)
        for name in range(per_dir):
            (directory / f"f{name}").write_bytes(b"x")
            traced.append(
                TracedFile(f"/usr/lib/d{number}/f{name}", Kind.FILE, (Access.OPENED, Access.READ))
            )
    os.symlink("usr/lib", root / "lib")
    base = ("/lib", *(f"/lib/d{number}" for number in range(dirs)))
    return SelectionRequest(traced=tuple(traced), includes=("/lib",), base_dirs=base)


def test_linking_kept_files_into_the_base_grows_linearly(tmp_path: Path) -> None:
    def selection_of(dirs: int) -> Callable[[], object]:
        root = tmp_path / f"root{dirs}"
        request = libraries_behind_a_link(root, dirs, 2)
        return lambda: select_files(RootFS(root), request, PackageDB(None, (), {}))

    small, large = (cpu_seconds(selection_of(dirs)) for dirs in (125, 2000))
    assert large < LINEAR_BOUND * small, f"{small:.3f}s, then {large:.3f}s for 16x the files"


def test_the_app_content_roots_grow_linearly() -> None:
    """Each directory the app read a file from is a root of its own content
    unless it is below another: asked of its ancestors, not of every root."""
    layout = PackageDB(None, (), {}).layout()

    def roots_of(dirs: int) -> Callable[[], object]:
        read = [f"/srv/app/d{n}/sub/file" for n in range(dirs)]
        read += [f"/srv/app/d{n}/page" for n in range(dirs)]
        return lambda: content_roots(read, layout, lambda _path: False)

    small, large = (cpu_seconds(roots_of(dirs)) for dirs in (250, 4000))
    assert large < LINEAR_BOUND * small, f"{small:.3f}s, then {large:.3f}s for 16x the dirs"


def test_the_keyed_data_sets_grow_linearly(tmp_path: Path) -> None:
    """Each file read is matched against the sets once, and the paths the
    app named are resolved once, not once per file read (a trace of 60,000
    reads and as many names took minutes)."""
    from slimmer.datasets import DATA_SET_NAMES, keyed_sets

    def sets_of(files: int) -> Callable[[], object]:
        root = tmp_path / f"root{files}"
        app = root / "app"
        app.mkdir(parents=True)
        zone = root / "usr/share/zoneinfo/Europe"
        zone.mkdir(parents=True)
        (zone / "Paris").write_bytes(b"TZif")
        read = [f"/app/m{n}.js" for n in range(files)]
        for name in read:
            (root / name.lstrip("/")).write_bytes(b"x")
        named = [*read, "/usr/share/zoneinfo/Europe/Paris"]
        fs = RootFS(root)
        return lambda: keyed_sets(fs, read, DATA_SET_NAMES, named=named)

    small, large = (cpu_seconds(sets_of(files)) for files in (250, 4000))
    assert large < LINEAR_BOUND * small, f"{small:.3f}s, then {large:.3f}s for 16x the files"
