"""strip_elf on real programs compiled with gcc -g (PIE, -O2, static,
-m32, a shared library), checked by running them and by binutils' readelf;
hand-built big-endian files for the byte orders gcc cannot make here; and
every refusal."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slimmer.strip import MODULE_SIGNATURE, StripOutcome, strip_elf

PROGRAM = r"""
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
extern int helper(int);
static int square(int x) { return x * x; }
int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 7;
    printf("square %d = %d, sqrt %.3f, helper %d\n", n, square(n), sqrt((double)n), helper(n));
    return n % 5;
}
"""
HELPER = "int helper(int x) { return 3 * x + 1; }\n"
LIBRARY = "int helper(int x) { static int calls; calls++; return 3 * x + calls; }\n"


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory):
    if shutil.which("gcc") is None:
        pytest.fail("gcc is needed (apt-get install gcc)")
    directory = tmp_path_factory.mktemp("strip")
    (directory / "main.c").write_text(PROGRAM)
    (directory / "helper.c").write_text(HELPER)
    (directory / "lib.c").write_text(LIBRARY)

    def compile_(name: str, *flags: str, sources: tuple[str, ...] = ("main.c", "helper.c")) -> Path:
        target = directory / name
        command = ["gcc", *flags, "-o", str(target), *(str(directory / s) for s in sources)]
        subprocess.run([*command, "-lm"], check=True, capture_output=True)
        return target

    return directory, compile_


def stripped_copy(path: Path) -> tuple[Path, object]:
    data = path.read_bytes()
    result = strip_elf(data)
    target = path.with_name(path.name + ".slim")
    target.write_bytes(result.output(data))
    target.chmod(0o755)
    return target, result


def binutils_size(path: Path, option: str) -> int:
    copy = path.with_name(f"{path.name}{option}")
    shutil.copyfile(path, copy)
    subprocess.run(["strip", option, str(copy)], check=True)
    return copy.stat().st_size


def readelf_problems(path: Path) -> str:
    done = subprocess.run(
        ["readelf", "-W", "-h", "-S", "-l", "-d", "-n", "--dyn-syms", str(path)],
        capture_output=True,
        text=True,
    )
    return done.stderr + ("" if done.returncode == 0 else f"exit {done.returncode}")


def run(path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    done = subprocess.run([str(path), *args], capture_output=True, text=True, env=env)
    return done.returncode, done.stdout


@pytest.mark.parametrize(
    "flags",
    [("-g",), ("-g", "-O2"), ("-g", "-static"), ("-g", "-m32"), ("-g", "-no-pie")],
    ids=["pie", "O2", "static", "m32", "no-pie"],
)
def test_stripped_program_runs_the_same(build, flags: tuple[str, ...]) -> None:
    _, compile_ = build
    if "-m32" in flags and not Path("/usr/lib32/libc.so.6").exists():
        pytest.fail("32-bit tests need gcc-multilib (apt-get install gcc-multilib)")
    program = compile_("prog" + "".join(flags).replace("-", "_"), *flags)
    stripped, result = stripped_copy(program)
    assert result.outcome is StripOutcome.STRIPPED, result.reason
    assert {".debug_info", ".symtab", ".strtab"} <= set(result.removed)
    assert result.new_size == stripped.stat().st_size < program.stat().st_size
    # as small as binutils' --strip-all, give or take the alignment of a table
    assert abs(result.new_size - binutils_size(program, "--strip-all")) <= 16
    assert result.new_size < binutils_size(program, "--strip-debug")
    assert readelf_problems(stripped) == ""
    for args in ((), ("12",), ("10",)):
        assert run(stripped, *args) == run(program, *args)
    with stripped.open("rb") as handle:
        names = [s.name for s in ELFFile(handle).iter_sections()]
    assert ".comment" in names and names[-1] == ".shstrtab"
    assert not any(n.startswith(".debug") or n in (".symtab", ".strtab") for n in names)


def test_stripped_shared_library_loads(build) -> None:
    directory, compile_ = build
    library = compile_("libhelper.so", "-g", "-shared", "-fPIC", sources=("lib.c",))
    program = directory / "uses-lib"
    link = ["-L", str(directory), "-lhelper", "-lm"]
    subprocess.run(["gcc", "-g", "-o", str(program), str(directory / "main.c"), *link], check=True)
    expected = run(program, "9", env={"LD_LIBRARY_PATH": str(directory)})
    stripped, result = stripped_copy(library)
    assert result.outcome is StripOutcome.STRIPPED
    assert readelf_problems(stripped) == ""
    only = directory / "stripped-lib"
    only.mkdir()
    os.replace(stripped, only / "libhelper.so")
    env = {"LD_LIBRARY_PATH": str(only)}
    assert run(program, "9", env=env) == expected
    ldd = subprocess.run(["ldd", str(program)], capture_output=True, text=True, env=env)
    assert f"{only}/libhelper.so" in ldd.stdout


def test_nothing_to_strip_is_unchanged(build) -> None:
    _, compile_ = build
    program = compile_("plain", "-s")
    result = strip_elf(program.read_bytes())
    assert result.outcome is StripOutcome.UNCHANGED
    assert result.new_size == result.old_size


def test_refusals(build, tmp_path: Path) -> None:
    directory, compile_ = build
    program = compile_("refused", "-g").read_bytes()
    assert strip_elf(b"#!/bin/sh\necho hi\n").outcome is StripOutcome.REFUSED
    assert strip_elf(program, protected=True).outcome is StripOutcome.REFUSED
    signed = strip_elf(program + b"sig\0\0\0" + MODULE_SIGNATURE)
    assert (signed.outcome, signed.reason) == (
        StripOutcome.REFUSED,
        "it carries a module signature",
    )
    subprocess.run(
        ["gcc", "-g", "-c", "-o", str(tmp_path / "obj.o"), str(directory / "helper.c")], check=True
    )
    relocatable = strip_elf((tmp_path / "obj.o").read_bytes())
    assert relocatable.outcome is StripOutcome.REFUSED
    assert "not an executable" in relocatable.reason
    truncated = strip_elf(program[: len(program) // 2])
    assert truncated.outcome is StripOutcome.REFUSED


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 255)), min_size=1, max_size=8))
def test_corrupted_files_never_raise(build, changes: list[tuple[int, int]]) -> None:
    """Bytes changed anywhere (headers included): an outcome, never an
    exception; a stripped result still parses."""
    _, compile_ = build
    path = build[0] / "fuzz"
    if not path.exists():
        compile_("fuzz", "-g")
    data = bytearray(path.read_bytes())
    header_zone = 64 + 13 * 56
    for position, value in changes:
        # half the changes hit the ELF and program headers, half the section table
        offset = position % header_zone if position % 2 else len(data) - 1 - position % 2048
        data[offset] = value
    result = strip_elf(bytes(data))
    assert result.outcome in set(StripOutcome)
    if result.outcome is StripOutcome.STRIPPED:
        assert len(result.output(bytes(data))) == result.new_size


# -- hand-built files: both byte orders, both classes ---------------------------


def handmade_elf(big_endian: bool, elf64: bool) -> bytes:
    """ET_EXEC with one PT_LOAD over .text, then .comment, .debug_info,
    .symtab, .strtab, .shstrtab and the section table, laid out as ld does."""
    order = ">" if big_endian else "<"
    ehsize, phsize, shsize = (64, 56, 64) if elf64 else (52, 32, 40)
    text = b"\x60\x00\x00\x00" * 8
    text_offset = ehsize + phsize
    load_end = text_offset + len(text)
    comment = b"GCC: (handmade) 1\0"
    debug = b"\x07" * 100
    symtab = b"\0" * (24 if elf64 else 16) * 2
    strtab = b"\0main\0"
    names = b"\0.text\0.comment\0.debug_info\0.symtab\0.strtab\0.shstrtab\0"
    name = {
        n: names.index(n.encode() + b"\0")
        for n in (".text", ".comment", ".debug_info", ".symtab", ".strtab", ".shstrtab")
    }
    body = bytearray()
    offsets = {}
    position = load_end
    for label, blob in (
        ("comment", comment),
        ("debug", debug),
        ("symtab", symtab),
        ("strtab", strtab),
        ("names", names),
    ):
        pad = (-position) % 8
        body += b"\0" * pad
        position += pad
        offsets[label] = position
        body += blob
        position += len(blob)
    pad = (-position) % 8
    body += b"\0" * pad
    shoff = position + pad
    machine, entry = (21, 0x10000000 + text_offset) if big_endian else (62, 0x400000 + text_offset)
    machine = machine if elf64 else (20 if big_endian else 3)
    ident = b"\x7fELF" + bytes([2 if elf64 else 1, 2 if big_endian else 1, 1, 0]) + b"\0" * 8
    # e_type, e_machine, e_version, e_entry, e_phoff, e_shoff, e_flags, e_ehsize,
    # e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx
    words = "QQQ" if elf64 else "III"  # entry, phoff, shoff
    ehdr = ident + struct.pack(
        order + "HHI" + words + "IHHHHHH",
        2, machine, 1, entry, ehsize, shoff, 0, ehsize, phsize, 1, shsize, 7, 6,
    )  # fmt: skip
    if elf64:
        phdr = struct.pack(
            order + "IIQQQQQQ",
            1,
            5,
            0,
            entry - text_offset,
            entry - text_offset,
            load_end,
            load_end,
            0x1000,
        )
    else:
        phdr = struct.pack(
            order + "IIIIIIII",
            1,
            0,
            entry - text_offset,
            entry - text_offset,
            load_end,
            load_end,
            5,
            0x1000,
        )

    def shdr(
        nm: int,
        kind: int,
        flags: int,
        addr: int,
        off: int,
        size: int,
        link: int = 0,
        info: int = 0,
        align: int = 1,
        entsize: int = 0,
    ) -> bytes:
        if elf64:
            return struct.pack(
                order + "IIQQQQIIQQ", nm, kind, flags, addr, off, size, link, info, align, entsize
            )
        return struct.pack(
            order + "IIIIIIIIII", nm, kind, flags, addr, off, size, link, info, align, entsize
        )

    sym_size = 24 if elf64 else 16
    table = b"".join(
        [
            shdr(0, 0, 0, 0, 0, 0),
            shdr(name[".text"], 1, 6, entry, text_offset, len(text), align=4),
            shdr(
                name[".comment"], 1, 0x30, 0, offsets["comment"], len(comment), align=1, entsize=1
            ),
            shdr(name[".debug_info"], 1, 0, 0, offsets["debug"], len(debug)),
            shdr(
                name[".symtab"],
                2,
                0,
                0,
                offsets["symtab"],
                len(symtab),
                link=5,
                info=1,
                align=8,
                entsize=sym_size,
            ),
            shdr(name[".strtab"], 3, 0, 0, offsets["strtab"], len(strtab)),
            shdr(name[".shstrtab"], 3, 0, 0, offsets["names"], len(names)),
        ]
    )
    return ehdr + phdr + text + bytes(body) + table


@pytest.mark.parametrize("big_endian", [True, False], ids=["msb", "lsb"])
@pytest.mark.parametrize("elf64", [True, False], ids=["elf64", "elf32"])
def test_both_byte_orders_and_classes(big_endian: bool, elf64: bool, tmp_path: Path) -> None:
    data = handmade_elf(big_endian, elf64)
    original = tmp_path / "original"
    original.write_bytes(data)
    assert readelf_problems(original) == ""  # the hand-made file itself is sound
    result = strip_elf(data)
    assert result.outcome is StripOutcome.STRIPPED, result.reason
    assert result.removed == (".debug_info", ".symtab", ".strtab")
    new = result.output(data)
    stripped = tmp_path / "stripped"
    stripped.write_bytes(new)
    assert readelf_problems(stripped) == ""
    with stripped.open("rb") as handle:
        elf = ELFFile(handle)
        assert elf.little_endian is not big_endian and elf.elfclass == (64 if elf64 else 32)
        assert [s.name for s in elf.iter_sections()] == ["", ".text", ".comment", ".shstrtab"]
        assert elf.get_section_by_name(".comment").data() == b"GCC: (handmade) 1\0"
        assert elf.get_section_by_name(".text").data() == b"\x60\x00\x00\x00" * 8
    load_end = (64 + 56 if elf64 else 52 + 32) + 32
    assert new[64 if elf64 else 52 : load_end] == data[64 if elf64 else 52 : load_end]
