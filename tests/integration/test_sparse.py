"""A sparse file costs the host no more than it costs in the image: slim
runs with TMPDIR on a 128 MiB tmpfs and writes a --context-only context
there, for an image with a 2 GiB sparse file."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from slimmer.engine import Engine

SMALL_TMPFS = "128m"


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SMALL_TMPFS}", "tmpfs", str(mount)], check=True
    )
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def slim(*args: str, tmpdir: Path) -> None:
    """A real slim process whose temporary files go to `tmpdir`."""
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    result = subprocess.run(
        [sys.executable, "-m", "slimmer", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr


def test_a_sparse_2gib_file_costs_the_host_only_its_data(
    engine: Engine, fixture_image, tmp_path: Path, small_tmpfs: Path
) -> None:
    image = fixture_image("sparsefile")
    trace = tmp_path / "t.json"
    slim("trace", image, "-o", str(trace), "--until-exit", tmpdir=small_tmpfs)
    include = [
        "--trace",
        str(trace),
        "--include",
        "/data/big",
        "--report",
        str(tmp_path / "r.json"),
    ]

    context = small_tmpfs / "context.tar"
    slim("build", image, *include, "--context-only", str(context), tmpdir=small_tmpfs)
    assert context.stat().st_blocks * 512 < 8 << 20  # the file's data, headers and slim's sensor

    micro = f"slim-test-sparse-{engine.new_run_id()}:micro"
    try:
        slim("build", image, *include, "--include", "/bin/busybox", "-t", micro, tmpdir=small_tmpfs)
        sums = [
            engine.run_to_exit(tag, ["busybox", "sha256sum", "/data/big"], engine.new_run_id(), 600)
            for tag in (image, micro)
        ]
        assert sums[0][0] == 0 and sums[0][1] == sums[1][1], sums
    finally:
        engine.remove_image(micro)
