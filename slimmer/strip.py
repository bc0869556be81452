"""Drop debug sections and the symbol table from an ELF executable or
shared library, in pure Python (no binutils: the image is untrusted input
and the host may not have them).

What the loader and the program see does not change: every byte from the
start of the file to the end of the last segment (any program header, the
program header table, every SHF_ALLOC section) is copied unchanged, so
addresses, offsets, .dynsym, .dynamic, notes and build-id stay as they were.
Only non-allocated sections after that point can go:

- removed: .debug_*, .zdebug_*, .symtab, .strtab (the one .symtab links
  to), .symtab_shndx, and relocation sections for removed sections; this is
  `strip --strip-all` for an executable or a shared library (ld.so uses
  .dynsym, never .symtab);
- kept, moved down: every other non-allocated section (.comment,
  .gnu_debuglink, .gnu_debugdata, .note.*...), then a rebuilt .shstrtab,
  then the new section header table.

Refused (the file stays as it is, with the reason): not ELF, not ET_EXEC or
ET_DYN (objects, kernel modules), a module signature at the end, section
groups, extended section numbering, a section that links to one that would
go, allocated sections whose index would change, anything out of bounds.
The result is checked before it is returned: the loader's facts
(slimmer.elf.parse_elf) and every program header must be what they were.
"""

from __future__ import annotations

import io
import mmap
import os
import re
import stat
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, BinaryIO

from elftools.common.exceptions import ELFError
from elftools.construct import ConstructError, Container

from slimmer.elf import ElfClass, ElfIdent, ElfProblem, ElfType, elf_structs, parse_elf, read_ident
from slimmer.errors import SlimError
from slimmer.rootfs import RootFS

MODULE_SIGNATURE = b"~Module signature appended~\n"
REMOVABLE = re.compile(r"^(\.z?debug_.*|\.symtab|\.strtab|\.symtab_shndx)$")
SHF_ALLOC = 0x2
SHF_INFO_LINK = 0x40
SHN_LORESERVE = 0xFF00
SHN_XINDEX = 0xFFFF
NOBITS = ("SHT_NOBITS",)
RELOCATIONS = ("SHT_REL", "SHT_RELA")


class StripOutcome(StrEnum):
    STRIPPED = "stripped"
    UNCHANGED = "unchanged"  # nothing to remove
    REFUSED = "refused"  # not touched, for the reason given


@dataclass(frozen=True)
class Piece:
    """A run of the output: bytes of the input at `offset`, or literal data."""

    offset: int
    length: int
    data: bytes | None = None


@dataclass(frozen=True)
class StripResult:
    outcome: StripOutcome
    reason: str
    old_size: int
    new_size: int
    removed: tuple[str, ...] = ()  # section names, in file order
    pieces: tuple[Piece, ...] = ()  # the new file (STRIPPED only)

    def write(self, source: bytes | memoryview, out: BinaryIO) -> None:
        """Stream the stripped file to `out` from the original bytes."""
        if self.outcome is not StripOutcome.STRIPPED:
            out.write(source)
            return
        view = memoryview(source)
        for piece in self.pieces:
            if piece.data is not None:
                out.write(piece.data)
            else:
                out.write(view[piece.offset : piece.offset + piece.length])

    def output(self, source: bytes | memoryview) -> bytes:
        buffer = io.BytesIO()
        self.write(source, buffer)
        return buffer.getvalue()


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class _Section:
    index: int
    name: str
    header: Any  # pyelftools Container

    @property
    def alloc(self) -> bool:
        return bool(self.header.sh_flags & SHF_ALLOC)

    @property
    def has_bytes(self) -> bool:
        return self.header.sh_type not in NOBITS

    @property
    def end(self) -> int:
        return self.header.sh_offset + (self.header.sh_size if self.has_bytes else 0)


def _unchanged(outcome: StripOutcome, reason: str, size: int) -> StripResult:
    return StripResult(outcome, reason, size, size)


def strip_elf(data: bytes | memoryview, *, protected: bool = False) -> StripResult:
    """Plan the stripped file. `protected` is the caller's verdict that the
    bytes are verified elsewhere (a checksum in a package database, a file
    the app hashes): such a file is refused."""
    size = len(data)
    if protected:
        return _unchanged(StripOutcome.REFUSED, "its bytes are verified (protected)", size)
    ident = read_ident(bytes(data[:64]))
    if isinstance(ident, ElfProblem):
        return _unchanged(StripOutcome.REFUSED, f"not an ELF file ({ident.reason})", size)
    if ident.elf_type not in (ElfType.EXEC, ElfType.DYN):
        return _unchanged(StripOutcome.REFUSED, "not an executable or shared library", size)
    if bytes(data[-len(MODULE_SIGNATURE) :]) == MODULE_SIGNATURE:
        return _unchanged(StripOutcome.REFUSED, "it carries a module signature", size)
    try:
        return _plan(data, ident)
    except _Refused as refused:
        return _unchanged(StripOutcome.REFUSED, refused.reason, size)
    except (
        ELFError,
        ConstructError,
        struct.error,
        ValueError,
        IndexError,
        OverflowError,
        MemoryError,
    ) as exc:
        return _unchanged(StripOutcome.REFUSED, f"malformed ELF file: {type(exc).__name__}", size)


def _slice(data: bytes | memoryview, offset: int, length: int) -> bytes:
    if offset < 0 or length < 0 or offset + length > len(data):
        raise _Refused(f"{length} bytes at offset {offset} are outside the file")
    return bytes(data[offset : offset + length])


def _read_sections(data: bytes | memoryview, structs: Any, ehdr: Any) -> tuple[list[_Section], Any]:
    if ehdr.e_shnum == 0 or ehdr.e_shstrndx == SHN_XINDEX:
        raise _Refused("extended section numbering")
    entry_size = structs.Elf_Shdr.sizeof()
    if ehdr.e_shentsize != entry_size:
        raise _Refused(f"section header entries of {ehdr.e_shentsize} bytes")
    table = _slice(data, ehdr.e_shoff, ehdr.e_shnum * entry_size)
    headers = [
        structs.Elf_Shdr.parse(table[i * entry_size : (i + 1) * entry_size])
        for i in range(ehdr.e_shnum)
    ]
    if not 0 < ehdr.e_shstrndx < len(headers):
        raise _Refused("no section name table")
    names_header = headers[ehdr.e_shstrndx]
    names = _slice(data, names_header.sh_offset, names_header.sh_size)

    def name_of(offset: int) -> str:
        end = names.find(b"\0", offset)
        if offset >= len(names) or end < 0:
            raise _Refused(f"section name offset {offset} outside .shstrtab")
        return names[offset:end].decode("utf-8", "surrogateescape")

    sections = [_Section(i, name_of(h.sh_name) if i else "", h) for i, h in enumerate(headers)]
    for section in sections[1:]:
        if section.has_bytes:
            _slice(data, section.header.sh_offset, 0)
            if section.end > len(data):
                raise _Refused(f"section {section.name} runs past the end of the file")
        if section.header.sh_type == "SHT_GROUP":
            raise _Refused("section groups")
    return sections, names_header


def _segments(data: bytes | memoryview, structs: Any, ehdr: Any) -> list[Any]:
    entry_size = structs.Elf_Phdr.sizeof()
    if ehdr.e_phnum and ehdr.e_phentsize != entry_size:
        raise _Refused(f"program header entries of {ehdr.e_phentsize} bytes")
    table = _slice(data, ehdr.e_phoff, ehdr.e_phnum * entry_size)
    segments = [
        structs.Elf_Phdr.parse(table[i * entry_size : (i + 1) * entry_size])
        for i in range(ehdr.e_phnum)
    ]
    for segment in segments:
        if segment.p_offset + segment.p_filesz > len(data):
            raise _Refused("a segment runs past the end of the file")
    return segments


def _removed_indexes(sections: list[_Section], load_end: int) -> set[int]:
    removed = {
        s.index
        for s in sections[1:]
        if REMOVABLE.match(s.name) and not s.alloc and s.header.sh_offset >= load_end
    }
    # .strtab goes only as the string table of a removed .symtab
    symtab_strings = {
        s.header.sh_link for s in sections if s.index in removed and s.name == ".symtab"
    }
    removed -= {s.index for s in sections if s.name == ".strtab" and s.index not in symtab_strings}
    # relocations for removed sections go with them (objects with --emit-relocs)
    for section in sections[1:]:
        if (
            section.header.sh_type in RELOCATIONS
            and not section.alloc
            and section.header.sh_info in removed
            and section.header.sh_offset >= load_end
        ):
            removed.add(section.index)
    return removed


def _load_end(sections: list[_Section], segments: list[Any], ehdr: Any, phdr_size: int) -> int:
    """The end of the bytes that must stay where they are."""
    ends = [ehdr.e_ehsize, ehdr.e_phoff + ehdr.e_phnum * phdr_size]
    ends += [s.p_offset + s.p_filesz for s in segments]
    ends += [s.end for s in sections[1:] if s.alloc]
    return max(ends)


def _unlinkable(section: _Section, target: _Section) -> bool:
    """A static binary's .rela.plt (IRELATIVE relocations, applied by its
    startup code through linker symbols, never through section headers)
    names .symtab as its symbol table; strip unlinks it the same way."""
    return section.alloc and section.header.sh_type in RELOCATIONS and target.name == ".symtab"


def _literal(data: bytes) -> Piece:
    return Piece(0, len(data), data)


MAX_ALIGNMENT = 1 << 16  # the largest page size; a section asking for more is not sane


def _align(offset: int, alignment: int) -> int:
    if alignment <= 1:
        return offset
    if alignment > MAX_ALIGNMENT or alignment & (alignment - 1):
        raise _Refused(f"a section alignment of {alignment}")
    return (offset + alignment - 1) // alignment * alignment


def _plan(data: bytes | memoryview, ident: ElfIdent) -> StripResult:
    structs, ehdr = elf_structs(ident, bytes(data[:64]))
    if ehdr.e_shoff == 0:
        return _unchanged(StripOutcome.UNCHANGED, "no section headers", len(data))
    sections, names_header = _read_sections(data, structs, ehdr)
    segments = _segments(data, structs, ehdr)
    load_end = _load_end(sections, segments, ehdr, structs.Elf_Phdr.sizeof())
    removed = _removed_indexes(sections, load_end)
    if not removed:
        return _unchanged(StripOutcome.UNCHANGED, "no debug sections or symbol table", len(data))

    old_names_index = ehdr.e_shstrndx
    kept = [s for s in sections if s.index not in removed and s.index != old_names_index]
    new_index = {s.index: i for i, s in enumerate(kept)}
    for section in kept:
        if section.alloc and new_index[section.index] != section.index:
            raise _Refused(f"allocated section {section.name} would change its index")
        link = section.header.sh_link
        if link >= len(sections):
            raise _Refused(f"section {section.name} links to section {link}, which is not there")
        if link in removed and not _unlinkable(section, sections[link]):
            raise _Refused(f"section {section.name} links to a section that would go")

    # the new .shstrtab: names of the kept sections, then its own
    names = bytearray(b"\0")
    name_offsets: dict[str, int] = {"": 0}
    for name in [*(s.name for s in kept[1:]), ".shstrtab"]:
        if name not in name_offsets:
            name_offsets[name] = len(names)
            names += name.encode("utf-8", "surrogateescape") + b"\0"

    body: list[Piece] = []  # after the bytes that stay in place
    position = load_end
    headers = [structs.Elf_Shdr.build(sections[0].header)]
    for section in kept[1:]:
        header = Container(**dict(section.header))
        header.sh_name = name_offsets[section.name]
        header.sh_link = new_index.get(header.sh_link, 0)  # 0: linked to a removed .symtab
        if header.sh_info and (header.sh_type in RELOCATIONS or header.sh_flags & SHF_INFO_LINK):
            if header.sh_info not in new_index:
                raise _Refused(f"section {section.name} applies to a section that would go")
            header.sh_info = new_index[header.sh_info]
        if not section.alloc and section.header.sh_offset >= load_end:
            start = _align(position, section.header.sh_addralign)
            body.append(_literal(b"\0" * (start - position)))
            header.sh_offset = position = start
            if section.has_bytes:
                body.append(Piece(section.header.sh_offset, section.header.sh_size))
                position += section.header.sh_size
        headers.append(structs.Elf_Shdr.build(header))

    names_entry = Container(**dict(names_header))
    names_entry.sh_name = name_offsets[".shstrtab"]
    names_entry.sh_offset, names_entry.sh_size = position, len(names)
    names_entry.sh_link = names_entry.sh_info = 0
    headers.append(structs.Elf_Shdr.build(names_entry))
    body.append(_literal(bytes(names)))
    position += len(names)
    table_start = _align(position, 8 if ident.elf_class == ElfClass.ELF64 else 4)
    body.append(_literal(b"\0" * (table_start - position)))
    body.append(_literal(b"".join(headers)))

    new_ehdr = Container(**dict(ehdr))
    new_ehdr.e_shoff = table_start
    new_ehdr.e_shnum = len(headers)
    new_ehdr.e_shstrndx = len(headers) - 1
    ehdr_bytes = structs.Elf_Ehdr.build(new_ehdr)
    pieces = [
        _literal(ehdr_bytes),
        Piece(len(ehdr_bytes), load_end - len(ehdr_bytes)),
        *(p for p in body if p.length),
    ]
    new_size = sum(p.length for p in pieces)
    removed_names = tuple(s.name for s in sections if s.index in removed)
    result = StripResult(
        StripOutcome.STRIPPED,
        f"removed {len(removed_names)} sections",
        len(data),
        new_size,
        removed_names,
        tuple(pieces),
    )
    _check(data, result, structs)
    return result


def _check(data: bytes | memoryview, result: StripResult, structs: Any) -> None:
    """What the loader reads must be what it was."""
    new = result.output(data)
    if len(new) != result.new_size:
        raise _Refused("internal: the output is not the planned size")
    before, after = parse_elf(bytes(data)), parse_elf(new)
    if before != after:
        raise _Refused("the stripped file would not load the same")
    ehdr = structs.Elf_Ehdr.parse(new[:64])
    table = ehdr.e_phnum * ehdr.e_phentsize
    if new[ehdr.e_phoff : ehdr.e_phoff + table] != bytes(data[ehdr.e_phoff : ehdr.e_phoff + table]):
        raise _Refused("internal: the program headers changed")


# -- which kept files to strip ---------------------------------------------------

ELF_MAGIC = b"\x7fELF"


@dataclass(frozen=True)
class StripPlan:
    """What --strip does to the kept files: the stripped result of each name
    of a stripped file (hard links share it), the ELF files strip_elf
    refused and why, and those left alone as protected and why."""

    results: dict[str, StripResult]
    refused: tuple[tuple[str, str], ...]
    protected: tuple[tuple[str, str], ...]  # (path, why) of the files left alone

    def new_size(self, path: str, size: int) -> int:
        result = self.results.get(path)
        return result.new_size if result is not None else size


def plan_strip(
    fs: RootFS, paths: Sequence[str], protected: Callable[[str], str | None]
) -> StripPlan:
    """Plan the stripping of the regular files at `paths` (canonical paths
    of a RootFS). A file is protected when `protected` gives a reason for
    any of its names. Files are mapped, not read into memory."""
    names: dict[tuple[int, int], list[str]] = {}
    for path in paths:
        try:
            info = fs.lstat(path)
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode) and info.st_size > len(ELF_MAGIC):
            names.setdefault((info.st_dev, info.st_ino), []).append(path)
    results: dict[str, StripResult] = {}
    refused: list[tuple[str, str]] = []
    left: list[tuple[str, str]] = []
    for same in names.values():
        first = same[0]
        try:
            _, fd = fs.open_file(first)
        except (OSError, ValueError, SlimError):
            continue
        with os.fdopen(fd, "rb") as handle:
            if handle.read(len(ELF_MAGIC)) != ELF_MAGIC:
                continue
            why = next((reason for name in same if (reason := protected(name))), None)
            if why is not None:
                left.append((first, why))
                continue
            result = _strip_mapped(handle)
        if result.outcome is StripOutcome.STRIPPED:
            results.update(dict.fromkeys(same, result))
        elif result.outcome is StripOutcome.REFUSED:
            refused.append((first, result.reason))
    return StripPlan(results, tuple(refused), tuple(left))


def _strip_mapped(handle: BinaryIO) -> StripResult:
    with (
        mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped,
        memoryview(mapped) as view,
    ):
        return strip_elf(view)


def stripped_content(result: StripResult, handle: BinaryIO) -> bytes:
    """The stripped file, made from the original's open handle (which must
    still be the file that was planned: same size)."""
    size = os.fstat(handle.fileno()).st_size
    if size != result.old_size:
        raise ValueError(
            f"the file changed size ({result.old_size} -> {size}) since --strip planned it"
        )
    with (
        mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped,
        memoryview(mapped) as view,
    ):
        return result.output(view)
