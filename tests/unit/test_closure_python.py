"""Python's closure on plain directories: what a module imports (parsed,
never run), and where the image's interpreter would find it. The host's
own CPython, run with the root's dirs as sys.path, is the oracle for
resolution."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from slimmer.closure.common import Ref
from slimmer.closure.paths import python_paths
from slimmer.closure.python import PythonPaths, PythonResolver, parse_python, scan_python
from slimmer.rootfs import RootFS
from tests.helpers.elfroot import ElfRoot

APP = b"""\
import os, json as j
from http import server
try:
    import _speedups
except ImportError:
    import slow_fallback
if TYPE_CHECKING:
    import typing_only

def route():
    import statistics
    from zoneinfo import ZoneInfo
    from . import sibling
    from ..pkg import thing
    importlib.import_module("sqlite3")
    importlib.import_module(".plugins", package="app")
    __import__("decimal")
    name = "x"
    importlib.import_module(name)

class Handler:
    import csv

if __name__ == "__main__":
    import argparse
"""


def by_name(refs: list[Ref]) -> dict[str | None, Ref]:
    return {ref.name: ref for ref in refs}


def test_imports_at_any_depth_with_their_laziness() -> None:
    refs = by_name(parse_python(APP))
    for eager in ("os", "json", "http", "_speedups", "slow_fallback", "csv"):
        assert refs[eager].eager, eager
    for lazy in ("statistics", "zoneinfo", ".", "..pkg", "sqlite3", "decimal", "argparse"):
        assert not refs[lazy].eager, lazy
    assert refs["http"].kind == "from" and refs["http"].extra == ("server",)
    assert refs["zoneinfo"].extra == ("ZoneInfo",)
    assert refs[".plugins"].extra == ("app",)
    assert refs["statistics"].line == 11 and refs["statistics"].text == "import statistics"
    assert "typing_only" not in refs  # under TYPE_CHECKING: never runs
    computed = [r for r in parse_python(APP) if r.name is None]
    assert [r.text for r in computed] == ["importlib.import_module(name)"]


def test_a_fallback_import_belongs_to_its_try() -> None:
    refs = by_name(parse_python(APP))
    assert refs["_speedups"].guard == refs["slow_fallback"].fallback is not None
    assert refs["os"].guard is None and refs["os"].fallback is None


@pytest.mark.parametrize(
    "source",
    [
        b'print "python 2"\nimport urllib2\nfrom os import (path,\n   sep)\n',
        b"type Alias[T] = list[T]\nimport newer\n",  # 3.12 syntax the sensor may not know
        b"\xff\xfe not utf-8 \nimport binary_safe\n",
        # a coding cookie: the sealed sensor cannot import the codec, so no lookup
        b'# -*- coding: latin-1 -*-\nname = "\xe9t\xe9"\nimport newer\n',
    ],
)
def test_source_ast_refuses_is_scanned_line_by_line(source: bytes) -> None:
    names = {ref.name for ref in parse_python(source)}
    assert names & {"urllib2", "newer", "binary_safe"}
    if b"urllib2" in source:
        (from_os,) = [r for r in scan_python(source.decode()) if r.name == "os"]
        assert from_os.extra == ("path", "sep")


def test_a_source_the_parser_cannot_handle_does_not_raise() -> None:
    deep = b"x = " + b"(" * 5000 + b")" * 5000 + b"\nimport after\n"
    assert "after" in {ref.name for ref in parse_python(deep)}


@pytest.fixture
def site(elfroot: ElfRoot) -> ElfRoot:
    """A Debian-like layout: stdlib, lib-dynload, dist-packages with a .pth."""
    elfroot.glibc_base()
    elfroot.write("/usr/lib/python3.11/os.py", "")
    elfroot.write("/usr/lib/python3.11/statistics.py", "import fractions\n")
    elfroot.write("/usr/lib/python3.11/fractions.py", "")
    elfroot.write("/usr/lib/python3.11/__pycache__/statistics.cpython-311.pyc", b"\x00")
    elfroot.write("/usr/lib/python3.11/__pycache__/statistics.cpython-312.pyc", b"\x00")
    elfroot.write("/usr/lib/python3.11/zoneinfo/__init__.py", "from ._common import x\n")
    elfroot.write("/usr/lib/python3.11/zoneinfo/_common.py", "")
    elfroot.mkdir("/usr/lib/python3.11/lib-dynload")
    elfroot.write("/usr/lib/python3/dist-packages/nspkg/a/__init__.py", "")
    elfroot.write("/usr/local/lib/python3.11/dist-packages/nspkg/b/__init__.py", "")
    elfroot.write("/usr/lib/python3/dist-packages/extra.pth", "../../vendor\nimport sys\n")
    elfroot.write("/usr/lib/vendor/vendored.py", "")
    elfroot.write("/srv/app/app.py", "")
    elfroot.write("/srv/app/handlers/__init__.py", "")
    elfroot.write("/srv/app/handlers/report.py", "")
    elfroot.write("/srv/app/handlers/plugins/__init__.py", "")
    elfroot.write("/srv/app/fast.py", "shadowed by the extension module")
    elfroot.copy_in(
        str(elfroot.lib("libfast.so.1", "/usr/lib/x86_64-linux-gnu")),
        "/srv/app/fast.cpython-311-x86_64-linux-gnu.so",
    )
    elfroot.write("/opt/extra/onpath.py", "")
    return elfroot


def paths_of(site: ElfRoot) -> PythonPaths:
    fs = RootFS(site.path)
    return python_paths(
        fs, [], ["/usr/lib/python3.11/os.py", "/srv/app/app.py"], {"PYTHONPATH": "/opt/extra"}
    )


def test_sys_path_is_read_from_the_image(site: ElfRoot) -> None:
    found = paths_of(site)
    assert found.roots == (
        "/srv/app",
        "/opt/extra",
        "/usr/lib/python3.11",
        "/usr/lib/python3.11/lib-dynload",
        "/usr/local/lib/python3.11/dist-packages",
        "/usr/lib/python3/dist-packages",
        "/usr/lib/python3/dist-packages/../../vendor",
    )
    assert found.tags == ("cpython-311",)
    assert found.is_stdlib("/usr/lib/python3.11/statistics.py")
    assert not found.is_stdlib("/usr/lib/python3/dist-packages/nspkg/a/__init__.py")


def resolve(site: ElfRoot, source: str, requester: str = "/srv/app/app.py") -> list[str] | None:
    resolver = PythonResolver(RootFS(site.path), paths_of(site))
    (ref,) = parse_python(source.encode())
    return resolver.resolve(ref, requester)


def test_a_module_with_its_cached_bytecode(site: ElfRoot) -> None:
    assert resolve(site, "import statistics") == [
        "/usr/lib/python3.11/statistics.py",
        "/usr/lib/python3.11/__pycache__/statistics.cpython-311.pyc",
    ]


def test_packages_submodules_relative_and_namespace(site: ElfRoot) -> None:
    assert resolve(site, "from zoneinfo import ZoneInfo") == [
        "/usr/lib/python3.11/zoneinfo/__init__.py"
    ]
    assert resolve(site, "from handlers import report") == [
        "/srv/app/handlers/__init__.py",
        "/srv/app/handlers/report.py",
    ]
    relative = resolve(site, "from .plugins import x", "/srv/app/handlers/report.py")
    assert relative == ["/srv/app/handlers/plugins/__init__.py"]
    assert resolve(site, "from .. import app", "/srv/app/handlers/report.py") == [
        "/srv/app",
        "/srv/app/app.py",
    ]
    called = resolve(site, 'importlib.import_module(".report", package="handlers")')
    assert called == ["/srv/app/handlers/report.py"]
    # a namespace package spans dist-packages dirs
    assert resolve(site, "import nspkg.b") == [
        "/usr/local/lib/python3.11/dist-packages/nspkg/b/__init__.py"
    ]
    assert resolve(site, "import vendored") == [
        "/usr/lib/python3/dist-packages/../../vendor/vendored.py"
    ]
    assert resolve(site, "import not_there") is None


def test_resolution_agrees_with_cpython(site: ElfRoot) -> None:
    """The host's CPython finds each module in the same file, given the
    same search path (the root's dirs on the host)."""
    roots = [str(site.path) + root for root in paths_of(site).roots]
    names = ["statistics", "zoneinfo", "handlers.report", "nspkg.a", "vendored", "fast"]
    script = (
        "import importlib.util, json, sys\n"
        f"sys.path[:] = {roots!r}\n"
        f"print(json.dumps([importlib.util.find_spec(n).origin for n in {names!r}]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", script], capture_output=True, text=True, check=True
    )
    expected = [
        origin.removeprefix(str(site.path)) if origin else None
        for origin in json.loads(result.stdout)
    ]
    ours = [resolve(site, f"import {name}") for name in names]
    for name, found, origin in zip(names, ours, expected, strict=True):
        assert found is not None and origin in found, (name, found, origin)


def test_an_extension_module_wins_over_source(site: ElfRoot) -> None:
    assert resolve(site, "import fast") == ["/srv/app/fast.cpython-311-x86_64-linux-gnu.so"]


def test_paths_from_the_interpreter_alone(site: ElfRoot) -> None:
    """With no stdlib file in the trace, the python binary's prefix says where
    the stdlib is."""
    site.write("/usr/bin/python3.11", b"\x7fELF")
    found = python_paths(RootFS(site.path), ["/usr/bin/python3.11"], [], {})
    assert found.roots[:2] == ("/usr/lib/python3.11", "/usr/lib/python3.11/lib-dynload")


def test_no_interpreter_no_paths(tmp_path: Path) -> None:
    assert python_paths(RootFS(tmp_path), [], [], {}).roots == ()
