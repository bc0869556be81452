"""A command starts fast: what `slim --help` and the parsing of every
command load leaves out the docker SDK, pyelftools, the SBOM library and the
sensor, and the SDK loads without paramiko (ssh:// engines only)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("docker", "paramiko", "elftools", "cyclonedx", "slimmer.sensor")

# Runs the command line in a fresh interpreter, then prints the loaded modules.
_PROBE = """
import json, sys
from slimmer.cli import main
sys.argv = ["slim", *json.loads(sys.argv[1])]
try:
    main()
except SystemExit:
    pass
sys.stderr.write("\\nMODULES " + json.dumps(sorted(sys.modules)) + "\\n")
"""


def loaded_by(*argv: str) -> set[str]:
    ran = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(argv)], capture_output=True, text=True
    )
    line = next(x for x in ran.stderr.splitlines() if x.startswith("MODULES "))
    return set(json.loads(line.removeprefix("MODULES ")))


def heavy_in(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


@pytest.mark.parametrize(
    "argv",
    [
        ("--help",),
        ("--version",),
        ("build", "--help"),
        ("trace", "--help"),
        ("verify", "--help"),
        ("schema", "trace"),
    ],
    ids=" ".join,
)
def test_help_loads_nothing_heavy(argv: tuple[str, ...]) -> None:
    assert heavy_in(loaded_by(*argv)) == []


def test_the_engine_module_loads_the_sdk_without_paramiko() -> None:
    ran = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, slimmer.engine, docker.transport.sshconn as ssh\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('paramiko', 'invoke')))\n"
            "print(ssh.paramiko.SSHClient.__module__)\n"
            "print('paramiko.client' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    before, used, after = ran.stdout.splitlines()
    assert before == "[]"  # not loaded with the SDK
    assert used == "paramiko.client" and after == "True"  # loaded when an ssh engine needs it


def test_what_build_needs_before_its_first_line_is_light() -> None:
    """slim build says which trace it uses (or starts tracing) with the
    engine's SDK and its own options loaded, before the code that makes the
    image: no pyelftools, SBOM library, loader emulation, sensor protocol."""
    ran = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, slimmer.cli.build, slimmer.builder, slimmer.engine\n"
            "print('\\n'.join(sorted(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = set(ran.stdout.split())
    heavy = ("elftools", "cyclonedx", "slimmer.loader", "slimmer.protocol", "slimmer.assemble")
    assert sorted(m for m in loaded if m.split(".")[0] in heavy or m in heavy) == []


def test_build_says_its_first_line_before_it_reaches_the_engine() -> None:
    """The first line comes before the engine is asked anything (here there
    is none), with only the options parsed: the SBOM's model, pyelftools and
    the code that makes the image are not loaded for it."""
    ran = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(["build", "some-image:1", "-t", "some:micro"])],
        capture_output=True,
        text=True,
        env={**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"},
    )
    lines = ran.stderr.splitlines()
    assert lines[0] == "slim: making some:micro from some-image:1"
    assert any("not reachable" in line for line in lines[1:])
    modules = set(json.loads(lines[-1].removeprefix("MODULES ")))
    late = ("elftools", "cyclonedx", "slimmer.sbom.model", "slimmer.assemble", "slimmer.context")
    assert sorted(m for m in modules if m.startswith(late)) == []
