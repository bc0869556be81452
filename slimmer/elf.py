"""Facts about one ELF file, as the dynamic loader sees them.

The identification bytes are read and classified here before pyelftools sees
the file, so garbage (a linker script named libc.so, a truncated file, a
big-endian object) gets the loader's verdict instead of a parser exception.
Dynamic tags come from PT_DYNAMIC, which survives stripped section headers.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from enum import Enum, IntEnum

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

ELF_MAGIC = b"\x7fELF"
EI_NIDENT = 16
DF_1_NODEFLIB = 0x800


class ElfClass(IntEnum):
    ELF32 = 1
    ELF64 = 2


class ElfData(IntEnum):
    LSB = 1
    MSB = 2


class ElfType(IntEnum):
    REL = 1
    EXEC = 2
    DYN = 3
    CORE = 4


# OS ABIs glibc accepts (SYSV and GNU/Linux); musl does not look.
ACCEPTED_OSABI = frozenset({0, 3})


class Verdict(Enum):
    """What the loader does with a candidate file."""

    OK = "ok"
    SKIP = "skip"  # wrong class or machine: try the next candidate
    FATAL = "fatal"  # the process would not start


@dataclass(frozen=True)
class ElfIdent:
    """The fields of the ELF header the loader checks."""

    elf_class: ElfClass
    data: ElfData
    osabi: int
    elf_type: int
    machine: int


@dataclass(frozen=True)
class ElfProblem:
    """Why a file is not a loadable object (or not the right one)."""

    verdict: Verdict
    reason: str


@dataclass(frozen=True)
class ElfInfo:
    """What the loader needs from one loadable object."""

    ident: ElfIdent
    interpreter: str | None
    needed: tuple[str, ...]
    soname: str | None
    rpath: str | None
    runpath: str | None
    flags_1: int
    has_dynamic: bool

    @property
    def nodeflib(self) -> bool:
        return bool(self.flags_1 & DF_1_NODEFLIB)


def read_ident(header: bytes) -> ElfIdent | ElfProblem:
    """Classify the first bytes of a file the way glibc's open_verify does,
    before any check that depends on the expected class or machine."""
    if len(header) < EI_NIDENT:
        return ElfProblem(Verdict.FATAL, "file too short")
    if header[:4] != ELF_MAGIC:
        return ElfProblem(Verdict.FATAL, "invalid ELF header")
    elf_class, data, osabi = header[4], header[5], header[7]
    if elf_class not in (1, 2):
        return ElfProblem(Verdict.FATAL, "invalid ELF class")
    if data not in (1, 2):
        return ElfProblem(Verdict.FATAL, "invalid ELF data encoding")
    header_size = 52 if elf_class == ElfClass.ELF32 else 64
    if len(header) < header_size:
        return ElfProblem(Verdict.FATAL, "file too short")
    byte_order = "<" if data == ElfData.LSB else ">"
    elf_type, machine = struct.unpack_from(byte_order + "HH", header, 16)
    return ElfIdent(ElfClass(elf_class), ElfData(data), osabi, elf_type, machine)


def check_loadable(ident: ElfIdent, expected: ElfIdent | None) -> ElfProblem | None:
    """The loader's verdict on a candidate, given the object that asks for it.

    A wrong class or machine is skipped (a 32-bit library in a 64-bit search
    dir); a wrong byte order, OS ABI or object type ends the process.
    """
    if expected is not None:
        if ident.elf_class != expected.elf_class:
            return ElfProblem(Verdict.SKIP, "wrong ELF class")
        if ident.data != expected.data:
            return ElfProblem(Verdict.FATAL, "ELF file data encoding not the expected one")
    if ident.osabi not in ACCEPTED_OSABI:
        return ElfProblem(Verdict.FATAL, "ELF file OS ABI invalid")
    if ident.elf_type not in (ElfType.EXEC, ElfType.DYN):
        return ElfProblem(Verdict.FATAL, "only ET_DYN and ET_EXEC can be loaded")
    if expected is not None and ident.machine != expected.machine:
        return ElfProblem(Verdict.SKIP, "wrong machine")
    return None


def parse_elf(data: bytes | io.BufferedIOBase) -> ElfInfo | ElfProblem:
    """Parse the loader-relevant facts of one ELF file.

    `data` is the whole file or a seekable binary stream. Problems with the
    identification come back as ElfProblem; a file whose program headers or
    dynamic table cannot be read is FATAL, as it would be for ld.so.
    """
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    header = stream.read(64)
    ident = read_ident(header)
    if isinstance(ident, ElfProblem):
        return ident
    problem = check_loadable(ident, None)
    if problem is not None:
        return problem
    stream.seek(0)
    try:
        return _dynamic_facts(ELFFile(stream), ident)
    except (ELFError, struct.error, ValueError, KeyError, OSError) as exc:
        return ElfProblem(Verdict.FATAL, f"malformed ELF file: {exc}")


def _dynamic_facts(elf: ELFFile, ident: ElfIdent) -> ElfInfo:
    interpreter: str | None = None
    needed: list[str] = []
    soname = rpath = runpath = None
    flags_1 = 0
    has_dynamic = False
    for segment in elf.iter_segments():
        segment_type = segment["p_type"]
        if segment_type == "PT_INTERP":
            interpreter = segment.get_interp_name()
        elif segment_type == "PT_DYNAMIC":
            has_dynamic = True
            for tag in segment.iter_tags():
                kind = tag.entry.d_tag
                if kind == "DT_NEEDED":
                    needed.append(tag.needed)
                elif kind == "DT_SONAME":
                    soname = tag.soname
                elif kind == "DT_RPATH":
                    rpath = tag.rpath
                elif kind == "DT_RUNPATH":
                    runpath = tag.runpath
                elif kind == "DT_FLAGS_1":
                    flags_1 = tag.entry.d_val
                elif kind == "DT_NULL":
                    break
    return ElfInfo(
        ident=ident,
        interpreter=interpreter,
        needed=tuple(needed),
        soname=soname,
        rpath=rpath,
        runpath=runpath,
        flags_1=flags_1,
        has_dynamic=has_dynamic,
    )
