"""ELF facts and the loader's verdicts on real files built with gcc."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

from slimmer.elf import (
    ElfClass,
    ElfInfo,
    ElfProblem,
    ElfType,
    Verdict,
    check_loadable,
    parse_elf,
    read_ident,
)
from tests.helpers.elfroot import ElfRoot


def built(elfroot: ElfRoot, **kw) -> bytes:
    return elfroot.exe("/prog", **kw).read_bytes()


def test_executable_facts(elfroot: ElfRoot) -> None:
    elfroot.lib("libx.so.1", "/l")
    info = parse_elf(built(elfroot, needed=("libx.so.1",), runpath="$ORIGIN/../lib", nodeflib=True))
    assert isinstance(info, ElfInfo)
    assert info.interpreter == "/lib64/ld-linux-x86-64.so.2"
    assert info.needed[0] == "libx.so.1" and "libc.so.6" in info.needed
    assert (info.runpath, info.rpath) == ("$ORIGIN/../lib", None)
    assert info.nodeflib
    assert info.ident.elf_class is ElfClass.ELF64 and info.ident.machine == 62


def test_library_facts(elfroot: ElfRoot) -> None:
    info = parse_elf(elfroot.lib("liby.so.2", "/l", rpath="/opt/r").read_bytes())
    assert isinstance(info, ElfInfo)
    assert (info.soname, info.rpath, info.runpath, info.interpreter) == (
        "liby.so.2",
        "/opt/r",
        None,
        None,
    )
    assert not info.nodeflib


def test_dynamic_tags_survive_stripped_section_headers(elfroot: ElfRoot) -> None:
    elfroot.lib("libx.so.1", "/l")
    data = bytearray(built(elfroot, needed=("libx.so.1",), rpath="/opt/r"))
    struct.pack_into("<Q", data, 0x28, 0)  # e_shoff
    struct.pack_into("<HHH", data, 0x3A, 0, 0, 0)  # e_shentsize, e_shnum, e_shstrndx
    info = parse_elf(bytes(data))
    assert isinstance(info, ElfInfo)
    assert "libx.so.1" in info.needed and info.rpath == "/opt/r"


@pytest.mark.parametrize(
    ("mutate", "verdict", "reason"),
    [
        (lambda d: d[:10], Verdict.FATAL, "file too short"),
        (lambda d: d[:40], Verdict.FATAL, "file too short"),
        (lambda d: b"GROUP ( libc.so.6 )" + d[19:], Verdict.FATAL, "invalid ELF header"),
        (lambda d: d[:7] + b"\x61" + d[8:], Verdict.FATAL, "OS ABI"),
    ],
)
def test_garbage_is_classified(elfroot: ElfRoot, mutate, verdict: Verdict, reason: str) -> None:
    outcome = parse_elf(mutate(built(elfroot)))
    assert isinstance(outcome, ElfProblem)
    assert outcome.verdict is verdict and reason in outcome.reason


def test_relocatable_object_is_fatal(tmp_path: Path) -> None:
    source = tmp_path / "o.c"
    source.write_text("int x;\n")
    subprocess.run(["gcc", "-c", "-o", tmp_path / "o.o", source], check=True)
    outcome = parse_elf((tmp_path / "o.o").read_bytes())
    assert isinstance(outcome, ElfProblem) and outcome.verdict is Verdict.FATAL
    ident = read_ident((tmp_path / "o.o").read_bytes()[:64])
    assert not isinstance(ident, ElfProblem) and ident.elf_type == ElfType.REL


def test_class_machine_and_byte_order_against_the_requester(elfroot: ElfRoot) -> None:
    exe = read_ident(built(elfroot)[:64])
    lib32 = read_ident(elfroot.lib("lib32.so", "/l", m32=True).read_bytes()[:64])
    assert not isinstance(exe, ElfProblem) and not isinstance(lib32, ElfProblem)
    assert check_loadable(exe, exe) is None
    wrong_class = check_loadable(lib32, exe)
    assert wrong_class is not None and wrong_class.verdict is Verdict.SKIP
    data = bytearray(built(elfroot)[:64])
    data[5] = 2  # big-endian
    big = read_ident(bytes(data))
    assert not isinstance(big, ElfProblem)
    wrong_order = check_loadable(big, exe)
    assert wrong_order is not None and wrong_order.verdict is Verdict.FATAL
