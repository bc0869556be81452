"""The command line: version, help, slim deps' outputs and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from slimmer import __version__
from slimmer.cli import cli
from slimmer.errors import ExitCode
from tests.helpers.elfroot import ElfRoot
from tests.helpers.schemas import assert_valid


def test_version_and_help_through_python_m() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "slimmer", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and __version__ in out.stdout
    helped = subprocess.run(
        [sys.executable, "-m", "slimmer", "--help"], capture_output=True, text=True
    )
    assert helped.returncode == 0 and "deps" in helped.stdout


def test_deps_tree_and_json(elfroot: ElfRoot) -> None:
    elfroot.glibc_base()
    elfroot.lib("libleaf.so.1", "/opt/l")
    elfroot.lib("libtop.so.1", "/opt/l", needed=("libleaf.so.1",), runpath="$ORIGIN")
    elfroot.exe("/usr/bin/prog", needed=("libtop.so.1",), runpath="/opt/l")
    runner = CliRunner()
    tree = runner.invoke(cli, ["deps", "--root", str(elfroot.path), "/bin/prog"])
    assert tree.exit_code == 0, tree.output
    lines = tree.output.splitlines()
    assert lines[0] == "/bin/prog (/usr/bin/prog)"
    assert "    libtop.so.1 => /opt/l/libtop.so.1 [runpath]" in lines
    assert "        libleaf.so.1 => /opt/l/libleaf.so.1 [runpath]" in lines
    as_json = runner.invoke(cli, ["deps", "--root", str(elfroot.path), "--json", "/bin/prog"])
    assert_valid("deps", as_json.stdout)
    report = json.loads(as_json.stdout)
    assert report["schema"] == "slim.deps/1"
    assert "/opt/l/libleaf.so.1" in report["files"]
    assert {"path": "/bin", "target": "usr/bin"} in report["symlinks"]
    leaf = next(o for o in report["objects"] if o["path"] == "/opt/l/libleaf.so.1")
    assert leaf["loaded_by"] == "/opt/l/libtop.so.1" and leaf["via"] == "runpath"


def test_deps_env_is_the_images_not_the_hosts(elfroot: ElfRoot, monkeypatch) -> None:
    elfroot.glibc_base()
    elfroot.lib("libhidden.so", "/opt/hidden")
    elfroot.exe("/usr/bin/prog", needed=("libhidden.so",))
    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/hidden")
    runner = CliRunner()
    base = ["deps", "--root", str(elfroot.path), "--json"]
    without = runner.invoke(cli, [*base, "/usr/bin/prog"])
    assert without.exit_code == ExitCode.FAILURE
    assert json.loads(without.output)["missing"][0]["name"] == "libhidden.so"
    with_env = runner.invoke(cli, [*base, "--env", "LD_LIBRARY_PATH=/opt/hidden", "/usr/bin/prog"])
    assert with_env.exit_code == 0, with_env.output


def test_deps_errors_are_one_line_with_a_hint(elfroot: ElfRoot) -> None:
    result = CliRunner().invoke(cli, ["deps", "--root", str(elfroot.path), "/usr/bin/absent"])
    assert result.exit_code == ExitCode.NOT_FOUND
    assert result.output.splitlines()[0].startswith("slim: error: /usr/bin/absent: not found")
    assert "slim: hint:" in result.output
    bad_env = CliRunner().invoke(cli, ["deps", "--root", str(elfroot.path), "--env", "X", "/"])
    assert bad_env.exit_code == ExitCode.USAGE


def test_schema_command_prints_the_shipped_schemas() -> None:
    runner = CliRunner()
    trace = runner.invoke(cli, ["schema", "trace"])
    assert trace.exit_code == 0
    document = json.loads(trace.stdout)
    assert document["properties"]["schema"] == {"const": "slim.trace/2"}
    assert "Trace" not in document["$defs"] and "TracedFile" in document["$defs"]
    unknown = runner.invoke(cli, ["schema", "nope"])
    assert unknown.exit_code == ExitCode.USAGE


def test_every_command_is_a_module_of_its_own() -> None:
    """cli is a package: one module per command, each only parses and
    prints (no engine, no policy): none imports docker or the sensor."""
    from pathlib import Path

    import slimmer.cli

    package = Path(slimmer.cli.__file__).parent
    for module in package.glob("*.py"):
        text = module.read_text()
        assert "import docker" not in text and "slimmer.sensor" not in text, module.name
        assert "slimmer.runner" not in text and "RootFS" not in text, module.name
    assert {p.stem for p in package.glob("*.py")} >= {
        "trace",
        "build",
        "verify",
        "compare",
        "explain",
        "deps",
        "schema",
    }
