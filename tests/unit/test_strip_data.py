"""--strip leaves alone an ELF file the app read as data: which traced
reads the loading of the programs that ran explains (executed, in their
link maps) and which it does not, on a root of real ELF files (gcc)."""

from __future__ import annotations

import pytest

from slimmer.fileset import SelectionRequest
from slimmer.packages import KeptPackages
from slimmer.protocol import StripJob
from slimmer.rootfs import RootFS
from slimmer.sensor.collect import protection, read_as_data
from slimmer.trace import Access, Lookup, PathAction, TracedFile
from tests.helpers.elfroot import HOST_MULTIARCH, ElfRoot

LOADED = (Access.OPENED, Access.READ)
RAN = (Access.OPENED, Access.READ, Access.EXECUTED)


@pytest.fixture
def app_root(elfroot: ElfRoot) -> ElfRoot:
    """/opt/app/bin/app needs libapp.so.1 (its RUNPATH); the app's dir also
    holds libplugin.so.1 and the program checker, which nothing links."""
    root = elfroot.glibc_base()
    root.lib("libapp.so.1", "/opt/app/lib")
    root.lib("libplugin.so.1", "/opt/app/lib")
    root.exe("/opt/app/bin/app", needed=("libapp.so.1",), runpath="/opt/app/lib")
    root.exe("/opt/app/bin/checker")
    return root


def traced(*rows: tuple[str, tuple[Access, ...]]) -> tuple[TracedFile, ...]:
    return tuple(TracedFile(path, "file", access) for path, access in rows)  # type: ignore[arg-type]


def libc_rows() -> list[tuple[str, tuple[Access, ...]]]:
    return [
        (f"{HOST_MULTIARCH}/libc.so.6", LOADED),
        (f"{HOST_MULTIARCH}/ld-linux-x86-64.so.2", LOADED),
    ]


def test_what_the_programs_load_is_not_data_and_the_rest_is(app_root: ElfRoot) -> None:
    """The app ran; its library and libc were read by ld.so; the plugin and
    the other program were read by the app (a checksum, a copy)."""
    request = SelectionRequest(
        traced=traced(
            ("/opt/app/bin/app", RAN),
            ("/opt/app/lib/libapp.so.1", LOADED),
            ("/opt/app/lib/libplugin.so.1", LOADED),
            ("/opt/app/bin/checker", (Access.OPENED,)),  # mapped, never read()
            *libc_rows(),
        )
    )
    data = read_as_data(RootFS(app_root.path), request)
    assert data == {"/opt/app/lib/libplugin.so.1", "/opt/app/bin/checker"}
    why = protection(KeptPackages(None, ()), StripJob(), data)
    assert why("/opt/app/lib/libplugin.so.1") == (
        "the app read it, and no program that ran loads it: its bytes may be checked"
    )
    assert why("/opt/app/lib/libapp.so.1") is None and why("/opt/app/bin/app") is None


def test_an_exec_seen_at_the_system_call_explains_its_loading(app_root: ElfRoot) -> None:
    """A short-lived program the /proc sampling missed: its exec, seen at
    the system call, says the kernel and ld.so read it and its library."""
    rows = traced(
        ("/opt/app/bin/app", LOADED),
        ("/opt/app/lib/libapp.so.1", LOADED),
        *libc_rows(),
    )
    fs = RootFS(app_root.path)
    assert read_as_data(fs, SelectionRequest(traced=rows)) == {row.path for row in rows}
    execed = (Lookup("/opt/app/bin/app", PathAction.EXEC, True, True),)
    assert read_as_data(fs, SelectionRequest(traced=rows, lookups=execed)) == frozenset()
