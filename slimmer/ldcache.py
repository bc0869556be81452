"""glibc's /etc/ld.so.cache, and ld.so.conf for an "as if ldconfig ran" view.

ld.so reads only the binary cache; ld.so.conf matters only to ldconfig. The
parser handles the new format (`glibc-ld.so.cache1.1`), optionally preceded
by an old-format block (`ld.so-1.7.0`), and the glibc-hwcaps extension.
"""

from __future__ import annotations

import fnmatch
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from slimmer.errors import PathError, SlimError
from slimmer.rootfs import RootFS, join, parent

OLD_MAGIC = b"ld.so-1.7.0"
NEW_MAGIC = b"glibc-ld.so.cache1.1"
NEW_HEADER = struct.Struct("<20sIIB3xI12x")  # magic+version, nlibs, len_strings, flags, ext
NEW_ENTRY = struct.Struct("<iIIIQ")  # flags, key, value, osversion, hwcap
OLD_ENTRY_SIZE = 12
EXTENSION_MAGIC = 0xEAA42174
EXTENSION_TAG_HWCAPS = 1
HWCAP_EXTENSION_BIT = 1 << 62

FLAG_TYPE_MASK = 0x00FF
FLAG_ELF_LIBC6 = 0x0003
# (e_machine, ELF class) -> the cache flags ldconfig writes for that ABI.
ABI_FLAGS = {
    (62, 2): 0x0303,  # x86_64
    (62, 1): 0x0803,  # x32
    (3, 1): 0x0003,  # i386
    (183, 2): 0x0A03,  # aarch64
    (40, 1): 0x0903,  # armhf
    (243, 2): 0x1003,  # riscv64 (lp64d)
    (21, 2): 0x0503,  # ppc64
    (22, 2): 0x0403,  # s390x
}


class LdCacheError(SlimError):
    """The cache file is not in a format glibc would read."""


@dataclass(frozen=True)
class CacheEntry:
    name: str  # the key: a SONAME (or file name) ldconfig found
    path: str  # where ld.so opens it
    flags: int
    hwcaps: str | None  # the glibc-hwcaps subdirectory, for such entries


@dataclass(frozen=True)
class LdCache:
    entries: tuple[CacheEntry, ...]
    by_name: Mapping[str, tuple[CacheEntry, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[str, list[CacheEntry]] = {}
        for entry in self.entries:
            index.setdefault(entry.name, []).append(entry)
        frozen = {name: tuple(found) for name, found in index.items()}
        object.__setattr__(self, "by_name", MappingProxyType(frozen))

    def lookup(self, name: str, abi_flags: int | None) -> tuple[CacheEntry, ...]:
        """Entries for `name` that fit the ABI, in cache order (glibc takes
        the first baseline entry; hwcaps entries are CPU-dependent variants)."""
        return tuple(e for e in self.by_name.get(name, ()) if flags_fit(e.flags, abi_flags))


def flags_fit(entry_flags: int, abi_flags: int | None) -> bool:
    if abi_flags is None:
        return (entry_flags & FLAG_TYPE_MASK) == FLAG_ELF_LIBC6
    return entry_flags == abi_flags


def abi_flags_for(machine: int, elf_class: int) -> int | None:
    return ABI_FLAGS.get((machine, elf_class))


def _cstring(data: bytes, offset: int) -> str:
    end = data.find(b"\0", offset)
    if offset >= len(data) or end < 0:
        raise LdCacheError(f"ld.so.cache: string offset {offset} out of range")
    return data[offset:end].decode("utf-8", "surrogateescape")


def parse_ld_cache(data: bytes) -> LdCache:
    """Parse the bytes of an ld.so.cache file."""
    start = 0
    if data.startswith(OLD_MAGIC):
        if len(data) < 16:
            raise LdCacheError("ld.so.cache: truncated old-format header")
        (old_count,) = struct.unpack_from("<I", data, 12)
        start = 16 + old_count * OLD_ENTRY_SIZE
        start = (start + 7) & ~7
    if data[start : start + len(NEW_MAGIC)] != NEW_MAGIC:
        raise LdCacheError("ld.so.cache: not in the glibc-ld.so.cache1.1 format")
    if len(data) < start + NEW_HEADER.size:
        raise LdCacheError("ld.so.cache: truncated header")
    _, count, _, _, extension_offset = NEW_HEADER.unpack_from(data, start)
    entries_end = start + NEW_HEADER.size + count * NEW_ENTRY.size
    if entries_end > len(data):
        raise LdCacheError("ld.so.cache: truncated entry table")
    strings = data[start:]
    hwcap_names = _hwcap_names(strings, extension_offset)
    entries = []
    for index in range(count):
        flags, key, value, _, hwcap = NEW_ENTRY.unpack_from(
            data, start + NEW_HEADER.size + index * NEW_ENTRY.size
        )
        hwcaps = None
        if hwcap & HWCAP_EXTENSION_BIT:
            slot = hwcap & 0xFFFFFFFF
            hwcaps = hwcap_names[slot] if slot < len(hwcap_names) else f"#{slot}"
        entries.append(CacheEntry(_cstring(strings, key), _cstring(strings, value), flags, hwcaps))
    return LdCache(tuple(entries))


def _hwcap_names(strings: bytes, extension_offset: int) -> tuple[str, ...]:
    if extension_offset == 0 or extension_offset + 8 > len(strings):
        return ()
    magic, sections = struct.unpack_from("<II", strings, extension_offset)
    if magic != EXTENSION_MAGIC:
        return ()
    for index in range(sections):
        where = extension_offset + 8 + index * 16
        if where + 16 > len(strings):
            break
        tag, _, offset, size = struct.unpack_from("<IIII", strings, where)
        if tag == EXTENSION_TAG_HWCAPS and offset + size <= len(strings):
            slots = struct.unpack_from(f"<{size // 4}I", strings, offset)
            return tuple(_cstring(strings, slot) for slot in slots)
    return ()


def load_ld_cache(fs: RootFS, path: str = "/etc/ld.so.cache") -> LdCache | None:
    """The image's cache, or None when it has none (ld.so then searches dirs)."""
    try:
        data = fs.read_bytes(path)
    except PathError:
        return None
    return parse_ld_cache(data)


def ld_so_conf_dirs(fs: RootFS, path: str = "/etc/ld.so.conf") -> tuple[str, ...]:
    """Directories ldconfig would index, from ld.so.conf and its includes
    (globs relative to the including file's directory, matched in sorted
    order). Missing files give no directories."""
    seen_files: set[str] = set()
    dirs: list[str] = []
    _read_conf(fs, path, seen_files, dirs)
    return tuple(dict.fromkeys(dirs))


def _read_conf(fs: RootFS, path: str, seen_files: set[str], dirs: list[str]) -> None:
    try:
        resolved = fs.resolve(path).path
        text = fs.read_text(resolved)
    except PathError:
        return
    if resolved in seen_files:
        return
    seen_files.add(resolved)
    for raw_line in text.splitlines():
        line = raw_line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("include") and line[7:8].isspace():
            for pattern in line[8:].split():
                for match in glob_in_root(fs, join(parent(path), pattern)):
                    _read_conf(fs, match, seen_files, dirs)
        elif line.startswith("hwcap") and line[5:6].isspace():
            continue
        else:
            for entry in line.replace(",", " ").replace(":", " ").split():
                dirs.append(entry.split("=", 1)[0])


def glob_in_root(fs: RootFS, pattern: str) -> list[str]:
    """Expand a glob whose wildcards are only in the last component, inside
    the root; matches come back sorted, as glob(3) returns them."""
    directory, _, name_pattern = pattern.rpartition("/")
    directory = directory or "/"
    if not any(ch in name_pattern for ch in "*?["):
        return [pattern] if fs.exists(pattern) else []
    try:
        canonical = fs.resolve(directory).path
        names = fs.listdir(canonical)
    except (PathError, OSError):
        return []
    return [join(directory, name) for name in names if fnmatch.fnmatchcase(name, name_pattern)]
