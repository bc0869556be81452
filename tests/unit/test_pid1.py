"""--init's choice: the image's own tini/dumb-init first, else the dumb-init
of the PyPI wheel when the image's loader can run it (glibc, same
architecture), refused with the reason otherwise."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from slimmer.elf import ElfInfo, ElfProblem, parse_elf
from slimmer.pid1 import (
    NO_WHEEL,
    WHEEL_INIT_PATH,
    InitChoice,
    InitProblem,
    InitSource,
    check_init_fits,
    choose_init,
    find_image_init,
    find_wheel_init,
    read_init,
    with_init,
)
from slimmer.rootfs import RootFS
from tests.helpers.elfroot import GLIBC_INTERP, HOST_MULTIARCH, ElfRoot, compile_program

PATH_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


@pytest.fixture
def wheel_init() -> ElfInfo:
    binary = find_wheel_init()
    if binary is None:
        pytest.fail("the dumb-init wheel is needed: pip install -e '.[test]'")
    info = read_init(binary)
    assert isinstance(info, ElfInfo)
    return info


def test_wheel_binary_is_found_and_is_glibc_linked(wheel_init: ElfInfo) -> None:
    binary = find_wheel_init()
    assert binary is not None and binary.name == "dumb-init" and os.access(binary, os.X_OK)
    assert wheel_init.needed == ("libc.so.6",)
    assert wheel_init.interpreter == GLIBC_INTERP
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True)
    assert "dumb-init v1.2" in version.stdout + version.stderr


def test_glibc_image_of_the_same_machine_fits(elfroot: ElfRoot, wheel_init: ElfInfo) -> None:
    root = elfroot.glibc_base()
    assert check_init_fits(RootFS(root.path), wheel_init) is None
    choice = choose_init(RootFS(root.path), PATH_ENV, wheel=wheel_init)
    assert choice == InitChoice(InitSource.WHEEL, WHEEL_INIT_PATH)
    assert choose_init(RootFS(root.path), PATH_ENV) == NO_WHEEL


def test_musl_image_is_refused_with_the_reason(elfroot: ElfRoot, wheel_init: ElfInfo) -> None:
    root = elfroot.musl_base()
    problem = check_init_fits(RootFS(root.path), wheel_init)
    assert isinstance(problem, InitProblem) and "musl" in problem.reason
    choice = choose_init(RootFS(root.path), PATH_ENV, wheel=wheel_init)
    assert isinstance(choice, InitProblem) and "musl" in choice.reason
    assert "the image's own tini or dumb-init is used when it has one" in choice.reason


def test_other_architecture_is_refused(elfroot: ElfRoot, wheel_init: ElfInfo) -> None:
    root = elfroot.glibc_base()
    loader = root.host(f"{HOST_MULTIARCH}/ld-linux-x86-64.so.2")
    data = bytearray(loader.read_bytes())
    data[18:20] = (183).to_bytes(2, "little")  # EM_AARCH64
    loader.write_bytes(bytes(data))
    problem = check_init_fits(RootFS(root.path), wheel_init)
    assert isinstance(problem, InitProblem) and "another architecture" in problem.reason


def test_image_without_the_loader_is_refused(tmp_path: Path, wheel_init: ElfInfo) -> None:
    (tmp_path / "bin").mkdir()
    problem = check_init_fits(RootFS(tmp_path), wheel_init)
    assert isinstance(problem, InitProblem) and GLIBC_INTERP in problem.reason


@pytest.fixture
def init_program() -> bytes:
    """A real init program (the wheel's dumb-init: glibc, this machine)."""
    binary = find_wheel_init()
    assert binary is not None
    return binary.read_bytes()


@pytest.mark.parametrize(
    "path", ["/usr/bin/tini", "/usr/local/bin/dumb-init", "/tini", "/sbin/tini-static"]
)
def test_the_images_own_init_comes_first(
    elfroot: ElfRoot, init_program: bytes, wheel_init: ElfInfo, path: str
) -> None:
    root = elfroot.glibc_base()
    root.write(path, init_program, 0o755)
    choice = choose_init(RootFS(root.path), PATH_ENV, wheel=wheel_init, machine=wheel_init.ident)
    assert choice == InitChoice(InitSource.IMAGE, path)
    assert choice.argv == (path, "--")


@pytest.fixture
def static_program(tmp_path: Path) -> bytes:
    """A static program, as tini-static is."""
    return compile_program(tmp_path, "int main(void) { return 0; }\n", "-static")


def _truncated(program: bytes) -> bytes:
    return program[:1000]  # its headers are whole, its code is not there


def _other_machine(program: bytes) -> bytes:
    data = bytearray(program)
    data[18:20] = (183).to_bytes(2, "little")  # EM_AARCH64
    return bytes(data)


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (_truncated, "truncated: a loadable segment ends at byte"),
        (_other_machine, "built for another architecture (ELF machine 183"),
        (lambda _program: b'#!/bin/sh\nexec "$@"\n', "not a program the kernel runs"),
        (lambda _program: b"\x7fELF stand-in", "not a program the kernel runs"),
    ],
    ids=["truncated", "other-machine", "script", "garbage"],
)
@pytest.mark.parametrize("linked", ["static", "dynamic"])
def test_an_own_init_that_cannot_run_is_passed_over_for_the_wheels(
    elfroot: ElfRoot,
    init_program: bytes,
    static_program: bytes,
    wheel_init: ElfInfo,
    make,
    why: str,
    linked: str,
) -> None:
    """The image's tini cannot run here: the wheel's dumb-init is used and
    the choice names the tini and why; without the wheel, the refusal does.
    (A truncated dynamic program already lacks its dynamic table.)"""
    program = static_program if linked == "static" else init_program
    if linked == "dynamic" and make is _truncated:
        why = "past the end of the file"
    root = elfroot.glibc_base()
    root.write("/usr/bin/tini", make(program), 0o755)
    fs = RootFS(root.path)
    choice = choose_init(fs, PATH_ENV, wheel=wheel_init, machine=wheel_init.ident)
    assert isinstance(choice, InitChoice) and choice.source is InitSource.WHEEL
    (passed_over,) = choice.passed_over
    assert passed_over.startswith("/usr/bin/tini cannot run: ") and why in passed_over
    refused = choose_init(fs, PATH_ENV, machine=wheel_init.ident)
    assert isinstance(refused, InitProblem)
    assert (
        "/usr/bin/tini cannot run" in refused.reason and "pip install dumb-init" in refused.reason
    )


def test_an_own_init_whose_library_is_missing_is_passed_over(
    elfroot: ElfRoot, init_program: bytes, wheel_init: ElfInfo
) -> None:
    """A dynamic init needing a library the image does not have; a second
    one that runs is taken."""
    root = elfroot.glibc_base()
    root.lib("libgone.so.1", "/opt/build-only")
    root.exe("/usr/bin/tini", needed=("libgone.so.1",))
    root.write("/tini", init_program, 0o755)
    choice = choose_init(RootFS(root.path), PATH_ENV, wheel=wheel_init, machine=wheel_init.ident)
    assert isinstance(choice, InitChoice)
    assert (choice.source, choice.path) == (InitSource.IMAGE, "/tini")
    assert choice.passed_over == (
        "/usr/bin/tini cannot run: needs libgone.so.1, which the image's loader does not find",
    )


def test_a_non_executable_tini_is_not_an_init(tmp_path: Path) -> None:
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin/tini").write_text("not executable")
    assert find_image_init(RootFS(tmp_path), PATH_ENV) is None


def test_entrypoint_gets_the_init_in_front() -> None:
    init = InitChoice(InitSource.WHEEL, WHEEL_INIT_PATH)
    assert with_init(None, ["python3", "app.py"], init) == (
        [WHEEL_INIT_PATH, "--"],
        ["python3", "app.py"],
    )
    assert with_init(["/entry.sh"], ["serve"], init) == (
        [WHEEL_INIT_PATH, "--", "/entry.sh"],
        ["serve"],
    )
    assert with_init(["/sbin/tini", "--", "app"], None, init) == (["/sbin/tini", "--", "app"], None)
    assert with_init(None, None, init) == (None, None)


def test_read_init_refuses_what_is_not_a_program(tmp_path: Path) -> None:
    script = tmp_path / "dumb-init"
    script.write_text("#!/bin/sh\n")
    assert isinstance(read_init(script), InitProblem)
    assert isinstance(parse_elf(b"#!/bin/sh\n"), ElfProblem)
