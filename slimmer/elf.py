"""Facts about one ELF file, as the dynamic loader sees them.

The identification bytes are read and classified here before pyelftools sees
the file, so garbage (a linker script named libc.so, a truncated file, a
big-endian object) gets the loader's verdict instead of a parser exception.
Dynamic tags come from PT_DYNAMIC, which survives stripped section headers.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Any, BinaryIO

from elftools.common.exceptions import ELFError
from elftools.construct import ConstructError
from elftools.elf.structs import ELFStructs

ELF_MAGIC = b"\x7fELF"
EI_NIDENT = 16
HEADER_BYTES = 64  # the ELF header of a 64-bit object, what parse_elf reads first
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


def parse_elf(data: bytes | BinaryIO) -> ElfInfo | ElfProblem:
    """Parse the loader-relevant facts of one ELF file.

    `data` is the whole file or a seekable binary stream. Problems with the
    identification come back as ElfProblem; a file whose program headers or
    dynamic table cannot be read is FATAL, as it would be for ld.so.
    """
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    header = stream.read(HEADER_BYTES)
    ident = read_ident(header)
    if isinstance(ident, ElfProblem):
        return ident
    problem = check_loadable(ident, None)
    if problem is not None:
        return problem
    try:
        return _dynamic_facts(stream, header, ident)
    except (ELFError, ConstructError, struct.error, ValueError, OSError) as exc:
        return ElfProblem(Verdict.FATAL, f"malformed ELF file: {exc}")


def check_segments(data: bytes) -> ElfProblem | None:
    """Whether a program's loadable segments are all in the file. A
    truncated program passes the header checks, but the kernel refuses it
    (exec format error) or maps pages past its end (SIGBUS on first use)."""
    stream = io.BytesIO(data)
    header = stream.read(64)
    ident = read_ident(header)
    if isinstance(ident, ElfProblem):
        return ident
    try:
        structs, ehdr = _structs_for(ident, header)
        entry_size = structs.Elf_Phdr.sizeof()
        if not ehdr.e_phnum or ehdr.e_phentsize < entry_size:
            return ElfProblem(Verdict.FATAL, "no program headers")
        table = _read_at(stream, ehdr.e_phoff, ehdr.e_phnum * ehdr.e_phentsize)
        for index in range(ehdr.e_phnum):
            start = index * ehdr.e_phentsize
            segment = structs.Elf_Phdr.parse(table[start : start + entry_size])
            end = segment.p_offset + segment.p_filesz
            if segment.p_type == "PT_LOAD" and end > len(data):
                return ElfProblem(
                    Verdict.FATAL,
                    f"truncated: a loadable segment ends at byte {end}, the file has {len(data)}",
                )
    except (ELFError, ConstructError, struct.error, ValueError) as exc:
        return ElfProblem(Verdict.FATAL, f"malformed ELF file: {exc}")
    return None


# pyelftools builds its construct structs per ABI; building them costs about a
# millisecond, parsing with them microseconds, so they are made once per ABI.
_STRUCTS: dict[tuple[Any, ...], ELFStructs] = {}


def _structs_for(ident: ElfIdent, header: bytes) -> tuple[ELFStructs, Any]:
    """The ABI's structs and the parsed ELF header."""
    little_endian, elfclass = ident.data == ElfData.LSB, 32 * ident.elf_class
    basic = _STRUCTS.get((little_endian, elfclass))
    if basic is None:
        basic = ELFStructs(little_endian=little_endian, elfclass=elfclass)
        basic.create_basic_structs()
        _STRUCTS[(little_endian, elfclass)] = basic
    ehdr = basic.Elf_Ehdr.parse(header)
    key = (little_endian, elfclass, ehdr.e_type, ehdr.e_machine, ehdr.e_ident.EI_OSABI)
    structs = _STRUCTS.get(key)
    if structs is None:
        structs = ELFStructs(little_endian=little_endian, elfclass=elfclass)
        structs.create_basic_structs()
        structs.create_advanced_structs(*key[2:])
        _STRUCTS[key] = structs
    return structs, ehdr


def elf_structs(ident: ElfIdent, header: bytes) -> tuple[ELFStructs, Any]:
    """pyelftools' structs for this file's ABI (cached), and its parsed ELF
    header: for code that reads or writes headers (strip)."""
    return _structs_for(ident, header)


def _read_at(stream: BinaryIO, offset: int, size: int) -> bytes:
    stream.seek(offset)
    data = stream.read(size)
    if len(data) != size:
        raise ValueError(f"{size} bytes at offset {offset} are past the end of the file")
    return data


def _dynamic_facts(stream: BinaryIO, header: bytes, ident: ElfIdent) -> ElfInfo:
    """Read PT_INTERP and PT_DYNAMIC through the program headers only, so a
    file without section headers reads the same as one with them."""
    structs, ehdr = _structs_for(ident, header)
    entry_size = structs.Elf_Phdr.sizeof()
    if ehdr.e_phnum and ehdr.e_phentsize < entry_size:
        raise ValueError("program header entries too small")
    table = _read_at(stream, ehdr.e_phoff, ehdr.e_phnum * ehdr.e_phentsize)
    segments = [
        structs.Elf_Phdr.parse(table[i * ehdr.e_phentsize : i * ehdr.e_phentsize + entry_size])
        for i in range(ehdr.e_phnum)
    ]
    interpreter = None
    dynamic = None
    for segment in segments:
        if segment.p_type == "PT_INTERP":
            raw = _read_at(stream, segment.p_offset, segment.p_filesz)
            interpreter = raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        elif segment.p_type == "PT_DYNAMIC":
            dynamic = segment
    if dynamic is None:
        return ElfInfo(ident, interpreter, (), None, None, None, 0, has_dynamic=False)

    dyn_size = structs.Elf_Dyn.sizeof()
    table = _read_at(stream, dynamic.p_offset, dynamic.p_filesz)
    tags: list[tuple[str, int]] = []
    for offset in range(0, len(table) - dyn_size + 1, dyn_size):
        entry = structs.Elf_Dyn.parse(table[offset : offset + dyn_size])
        if entry.d_tag == "DT_NULL":
            break
        tags.append((entry.d_tag, entry.d_val))
    values = dict(reversed(tags))  # the first of each tag wins
    strings = _string_table(stream, segments, values.get("DT_STRTAB"), values.get("DT_STRSZ"))

    def string(tag: str) -> str | None:
        return strings(values[tag]) if tag in values else None

    return ElfInfo(
        ident=ident,
        interpreter=interpreter,
        needed=tuple(strings(value) for tag, value in tags if tag == "DT_NEEDED"),
        soname=string("DT_SONAME"),
        rpath=string("DT_RPATH"),
        runpath=string("DT_RUNPATH"),
        flags_1=values.get("DT_FLAGS_1", 0),
        has_dynamic=True,
    )


def _string_table(
    stream: BinaryIO, segments: list[Any], address: int | None, size: int | None
) -> Callable[[int], str]:
    """A lookup into the dynamic string table, found by its load address."""
    if address is None or size is None:

        def no_strings(offset: int) -> str:
            raise ValueError("dynamic string referenced but DT_STRTAB/DT_STRSZ missing")

        return no_strings
    file_offset = None
    for segment in segments:
        if (
            segment.p_type == "PT_LOAD"
            and segment.p_vaddr <= address < segment.p_vaddr + segment.p_filesz
        ):
            file_offset = address - segment.p_vaddr + segment.p_offset
            break
    if file_offset is None:
        raise ValueError("DT_STRTAB is outside every loaded segment")
    table = _read_at(stream, file_offset, size)

    def lookup(offset: int) -> str:
        end = table.find(b"\0", offset)
        if offset >= len(table) or end < 0:
            raise ValueError(f"string offset {offset} outside the dynamic string table")
        return table[offset:end].decode("utf-8", "surrogateescape")

    return lookup
