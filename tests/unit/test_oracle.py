"""`slim deps --root / --json` against glibc's ldd on this machine's own
dynamically linked files: the same libraries, by canonical path."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from click.testing import CliRunner

from slimmer.cli import cli

SAMPLE_DIRS = ("/usr/bin", "/usr/sbin", "/usr/lib/x86_64-linux-gnu")
SAMPLE_SIZE = 60  # per directory


def sample(directory: str) -> list[str]:
    """Every k-th dynamically linked ELF regular file, deterministically."""
    files = []
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if not entry.is_file(follow_symlinks=False):
            continue
        with open(entry.path, "rb") as handle:
            head = handle.read(20)
        if head[:4] == b"\x7fELF" and head[16] in (2, 3):  # ET_EXEC, ET_DYN
            files.append(entry.path)
    step = max(1, len(files) // SAMPLE_SIZE)
    return files[::step][:SAMPLE_SIZE]


def ldd(path: str) -> tuple[set[str], set[str]] | None:
    """Libraries (canonical) and not-found names, or None when ldd declines."""
    result = subprocess.run(["ldd", path], capture_output=True, text=True)
    if result.returncode != 0 or "statically linked" in result.stdout:
        return None
    found, missing = set(), set()
    for line in result.stdout.splitlines():
        parts = line.split()
        if "=>" in parts:
            target = parts[parts.index("=>") + 1]
            if target == "not":
                missing.add(parts[0])
            elif target.startswith("/"):
                found.add(os.path.realpath(target))
        elif parts and parts[0].startswith("/"):
            found.add(os.path.realpath(parts[0]))
    return found, missing


@pytest.mark.parametrize("directory", SAMPLE_DIRS)
def test_same_libraries_as_ldd(directory: str) -> None:
    paths = sample(directory)
    assert len(paths) >= 20, f"too few ELF files in {directory} to compare"
    result = CliRunner().invoke(cli, ["deps", "--root", "/", "--json", *paths])
    assert result.exit_code in (0, 1), result.output
    report = json.loads(result.output)
    objects_by_input: dict[str, set[str]] = {}
    for link_map in report["link_maps"]:
        objects_by_input[link_map["input"]] = set(link_map["objects"][1:])
    missing_by_input: dict[str, set[str]] = {}
    compared = 0
    for path in paths:
        expected = ldd(path)
        if expected is None:
            continue
        found, missing = expected
        compared += 1
        ours = objects_by_input.get(path, set())
        assert ours == found - {os.path.realpath(path)}, path
        missing_by_input[path] = missing
    assert compared >= 20
    ours_missing = {(m["requester"], m["name"]) for m in report["missing"]}
    for path, names in missing_by_input.items():
        for name in names:
            assert any(n == name for _, n in ours_missing), (path, name)
