"""ld.so.cache parsing, checked against `ldconfig -p` on caches that
ldconfig itself wrote for gcc-built roots."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from slimmer.ldcache import LdCacheError, ld_so_conf_dirs, load_ld_cache, parse_ld_cache
from slimmer.rootfs import RootFS
from tests.helpers.elfroot import ElfRoot

X86_64 = 0x0303


def ldconfig_listing(cache_file: str) -> set[tuple[str, str, str | None]]:
    out = subprocess.run(
        ["ldconfig", "-p", "-C", cache_file], capture_output=True, text=True, check=True
    )
    entries = set()
    for line in out.stdout.splitlines()[1:]:
        match = re.match(r"\s*(\S+) \(([^)]*)\) => (\S+)", line)
        if match:
            hwcap = re.search(r'hwcap: "([^"]+)"', match.group(2))
            entries.add((match.group(1), match.group(3), hwcap.group(1) if hwcap else None))
    return entries


@pytest.fixture
def cached_root(elfroot: ElfRoot) -> ElfRoot:
    elfroot.glibc_base()
    elfroot.lib("libone.so.1", "/opt/c", file_name="libone.so.1.2.3")
    elfroot.symlink("/opt/c/libone.so.1", "libone.so.1.2.3")
    elfroot.lib("libfast.so.1", "/opt/c")
    elfroot.lib("libfast.so.1", "/opt/c/glibc-hwcaps/x86-64-v3")
    elfroot.write("/etc/ld.so.conf", "include ld.so.conf.d/*.conf\n")
    elfroot.write("/etc/ld.so.conf.d/b.conf", "/opt/c\n")
    elfroot.write("/etc/ld.so.conf.d/a.conf", "/opt/a # a comment\n")
    elfroot.ldconfig()
    return elfroot


def test_cache_matches_ldconfig_listing(cached_root: ElfRoot) -> None:
    cache = load_ld_cache(RootFS(cached_root.path))
    assert cache is not None
    ours = {(e.name, e.path, e.hwcaps) for e in cache.entries}
    assert ours == ldconfig_listing(str(cached_root.host("/etc/ld.so.cache")))
    assert ("libone.so.1", "/opt/c/libone.so.1", None) in ours
    assert ("libfast.so.1", "/opt/c/glibc-hwcaps/x86-64-v3/libfast.so.1", "x86-64-v3") in ours


def test_lookup_filters_by_abi(cached_root: ElfRoot) -> None:
    cache = load_ld_cache(RootFS(cached_root.path))
    assert cache is not None
    assert [e.path for e in cache.lookup("libone.so.1", X86_64)] == ["/opt/c/libone.so.1"]
    assert cache.lookup("libone.so.1", 0x0A03) == ()  # aarch64 entries only
    assert cache.lookup("libnothing.so", X86_64) == ()


def test_host_cache_parses_like_ldconfig() -> None:
    cache = parse_ld_cache(Path("/etc/ld.so.cache").read_bytes())
    ours = {(e.name, e.path, e.hwcaps) for e in cache.entries}
    assert ours == ldconfig_listing("/etc/ld.so.cache")


def test_old_format_block_before_the_new_header(cached_root: ElfRoot) -> None:
    new = cached_root.host("/etc/ld.so.cache").read_bytes()
    old = b"ld.so-1.7.0\0" + (1).to_bytes(4, "little") + bytes(12)  # one old entry
    padding = bytes(-len(old) % 8)
    cache = parse_ld_cache(old + padding + new)
    assert any(e.name == "libone.so.1" for e in cache.entries)


@pytest.mark.parametrize("data", [b"", b"garbage" * 10, b"glibc-ld.so.cache1.1" + bytes(8)])
def test_garbage_cache_is_an_error(data: bytes) -> None:
    with pytest.raises(LdCacheError):
        parse_ld_cache(data)


def test_missing_cache_is_none(elfroot: ElfRoot) -> None:
    assert load_ld_cache(RootFS(elfroot.path)) is None


def test_conf_includes_are_relative_and_sorted(cached_root: ElfRoot) -> None:
    assert ld_so_conf_dirs(RootFS(cached_root.path)) == ("/opt/a", "/opt/c")
