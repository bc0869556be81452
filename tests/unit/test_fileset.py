"""The file set on plain directories: provenance, links, parents, drops."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from slimmer.builder import created_epoch
from slimmer.fileset import (
    Reason,
    SelectionError,
    SelectionRequest,
    check_pattern,
    select_files,
)
from slimmer.rootfs import Kind, RootFS
from slimmer.trace import Access, TracedFile
from tests.helpers.elfroot import ElfRoot


def traced(*rows: tuple[str, str]) -> tuple[TracedFile, ...]:
    return tuple(
        TracedFile(path, Kind.FILE, tuple(Access(a) for a in access.split(",")))
        for path, access in rows
    )


@pytest.fixture
def image(elfroot: ElfRoot) -> ElfRoot:
    elfroot.glibc_base()
    elfroot.lib("libapp.so.1", "/usr/lib/x86_64-linux-gnu")
    elfroot.exe("/opt/app/bin/app", needed=("libapp.so.1",))
    elfroot.write("/opt/app/conf/app.conf", "x=1\n")
    elfroot.write("/opt/app/conf/unused.conf", "never read\n")
    elfroot.write("/usr/share/zoneinfo/Etc/UTC", "TZif")
    elfroot.symlink("/etc/localtime", "/usr/share/zoneinfo/Etc/UTC")
    elfroot.mkdir("/opt/app/logs")
    elfroot.write("/opt/app/logs/old.log", "from the build")
    os.chmod(elfroot.host("/opt/app/logs"), 0o1733)
    return elfroot


def select(root: ElfRoot, **request):
    request = {k: tuple(v) if isinstance(v, list) else v for k, v in request.items()}
    selection = select_files(RootFS(root.path), SelectionRequest(**request))
    return (
        selection,
        {e.path: e for e in selection.entries},
        {d.path: d.why for d in selection.dropped},
    )


def test_traced_closure_links_and_parents(image: ElfRoot) -> None:
    rows = traced(
        ("/opt/app/bin/app", "opened,executed"),
        ("/opt/app/conf/app.conf", "opened,read"),
        ("/usr/share/zoneinfo/Etc/UTC", "opened,read"),
    )
    selection, kept, _ = select(image, traced=rows, app_content=False)
    assert Reason.TRACED in kept["/opt/app/conf/app.conf"].reasons
    assert "/opt/app/conf/unused.conf" not in kept
    lib = "/usr/lib/x86_64-linux-gnu/libapp.so.1"
    assert kept[lib].reasons == (Reason.ELF_CLOSURE,)
    assert Reason.ELF_CLOSURE in kept["/usr/lib/x86_64-linux-gnu/libc.so.6"].reasons
    assert kept["/lib64"].kind is Kind.SYMLINK and kept["/lib64"].link == "usr/lib64"
    assert kept["/etc/localtime"].link == "/usr/share/zoneinfo/Etc/UTC"
    for parent in ("/opt", "/opt/app", "/opt/app/conf", "/usr/share/zoneinfo/Etc"):
        assert kept[parent].kind is Kind.DIR and Reason.PARENT in kept[parent].reasons
    paths = [e.path for e in selection.entries]
    assert paths == sorted(paths)


def test_created_files_are_not_copied_and_written_dirs_come_empty(image: ElfRoot) -> None:
    rows = (
        TracedFile("/opt/app/logs", Kind.DIR, (Access.WRITTEN,)),
        TracedFile("/opt/app/logs/app.log", Kind.FILE, (Access.CREATED, Access.WRITTEN)),
        TracedFile("/opt/app/logs/old.log", "gone", (Access.DELETED,)),
    )
    _, kept, dropped = select(image, traced=rows)
    logs = kept["/opt/app/logs"]
    assert Reason.WRITTEN_DIR in logs.reasons and logs.mode == 0o1733
    assert "/opt/app/logs/app.log" not in kept
    assert dropped["/opt/app/logs/app.log"] == "created by the app during the trace"
    # the image's own file that the app deleted stays, as the image has it
    assert kept["/opt/app/logs/old.log"].reasons == (Reason.APP_CHANGED,)


def test_entrypoint_is_found_on_path(image: ElfRoot) -> None:
    image.symlink("/usr/bin/app", "/opt/app/bin/app")
    _, kept, _ = select(image, entrypoint=["app"], env={"PATH": "/usr/local/bin:/usr/bin"})
    assert Reason.ENTRYPOINT in kept["/opt/app/bin/app"].reasons
    assert kept["/usr/bin/app"].kind is Kind.SYMLINK
    assert "/usr/lib/x86_64-linux-gnu/libapp.so.1" in kept


def test_includes_excludes_and_their_patterns(image: ElfRoot) -> None:
    _, kept, dropped = select(
        image,
        includes=["/opt/app/conf", "/usr/share/zoneinfo/*/UTC"],
        excludes=["/opt/app/conf/unused*"],
    )
    assert Reason.INCLUDE in kept["/opt/app/conf/app.conf"].reasons
    assert Reason.INCLUDE in kept["/usr/share/zoneinfo/Etc/UTC"].reasons
    assert "/opt/app/conf/unused.conf" not in kept
    assert dropped["/opt/app/conf/unused.conf"] == "excluded by --exclude /opt/app/conf/unused*"
    for bad in ("relative/path", "/a[b"):
        with pytest.raises(SelectionError):
            check_pattern(bad, "--include")


def test_fifos_devices_and_whiteouts_are_listed_not_kept(image: ElfRoot) -> None:
    os.mkfifo(image.host("/opt/app/conf/pipe"))
    image.write("/opt/app/conf/.wh.secret", "")
    _, kept, dropped = select(image, includes=["/opt/app/conf"])
    assert "/opt/app/conf/pipe" not in kept and dropped["/opt/app/conf/pipe"] == "skipped: fifo"
    assert (
        "/opt/app/conf/.wh.secret" not in kept and "refused" in dropped["/opt/app/conf/.wh.secret"]
    )


def test_setuid_is_kept_with_a_warning(image: ElfRoot) -> None:
    path = image.host("/opt/app/bin/app")
    os.chown(path, 0, 0)
    os.chmod(path, 0o4755)
    selection, kept, _ = select(image, traced=traced(("/opt/app/bin/app", "executed")))
    assert kept["/opt/app/bin/app"].mode == 0o4755
    assert any("setuid" in w for w in selection.warnings)


def test_links_into_the_host_are_data(image: ElfRoot, tmp_path: Path) -> None:
    image.symlink("/opt/app/conf/shadow", "/etc/shadow")  # absent in the image
    (tmp_path / "outside").write_text("host secret")
    image.symlink("/opt/app/conf/escape", "../../../../../../" + str(tmp_path / "outside"))
    _, kept, dropped = select(image, includes=["/opt/app/conf/shadow", "/opt/app/conf/escape"])
    assert "/opt/app/conf/shadow" in dropped and "/opt/app/conf/escape" in dropped
    assert not any("outside" in p for p in kept)


def test_non_utf8_and_newline_names_survive(image: ElfRoot) -> None:
    odd = os.fsdecode(b"/opt/app/conf/caf\xe9 \n x")
    Path(image.host(odd)).write_text("odd")
    _, kept, _ = select(image, traced=traced((odd, "opened,read")))
    assert kept[odd].kind is Kind.FILE and stat.S_IMODE(kept[odd].mode) == 0o644


def test_mount_points_are_dropped_and_only_what_the_engine_touched_gets_its_time(
    image: ElfRoot,
) -> None:
    image.write("/etc/hosts", "127.0.0.1 collect-container\n")
    image.write("/etc/app.conf", "x")
    os.utime(image.host("/opt/app/conf/app.conf"), (2_000_000_000, 2_000_000_000))
    os.utime(image.host("/etc/app.conf"), (1_500_000_000, 1_500_000_000))
    rows = traced(
        ("/etc/hosts", "opened,read"),
        ("/opt/app/conf/app.conf", "opened,read"),
        ("/etc/app.conf", "opened,read"),
    )
    _, kept, dropped = select(
        image, traced=rows, mount_points=["/", "/etc/hosts"], engine_mtime=1_900_000_000
    )
    assert "/etc/hosts" not in kept and "mount point" in dropped["/etc/hosts"]
    assert kept["/opt/app/conf/app.conf"].mtime == 2_000_000_000  # its own, newer or not
    assert kept["/etc/app.conf"].mtime == 1_500_000_000
    assert kept["/etc"].mtime == 1_900_000_000  # the engine made /etc/hosts in it


def test_without_a_creation_time_files_keep_theirs(image: ElfRoot) -> None:
    """An image whose Created is missing (year 1) or 1970: every file keeps
    its own mtime; what the engine touched gets the newest of them."""
    os.utime(image.host("/opt/app/conf/app.conf"), (1_600_000_000, 1_600_000_000))
    image.write("/etc/app.conf", "x")
    rows = traced(("/opt/app/conf/app.conf", "opened,read"), ("/etc/app.conf", "opened"))
    selection, kept, _ = select(image, traced=rows, mount_points=["/etc/hosts"])
    assert kept["/opt/app/conf/app.conf"].mtime == 1_600_000_000
    newest = max(e.mtime for e in selection.entries if e.path != "/etc")
    assert kept["/etc"].mtime == newest


@pytest.mark.parametrize(
    ("created", "epoch"),
    [
        ("2024-05-01T10:00:00.123456789Z", 1714557600),
        ("2024-05-01T12:00:00+02:00", 1714557600),
        ("1970-01-01T00:00:00Z", None),
        ("0001-01-01T00:00:00Z", None),
        ("", None),
        (None, None),
        ("yesterday", None),
        ("2024-13-45T99:99:99Z", None),
    ],
)
def test_creation_times_that_are_not_one(created: str | None, epoch: int | None) -> None:
    assert created_epoch(created) == epoch


def test_bytecode_keeps_its_source(image: ElfRoot) -> None:
    image.write("/usr/lib/python3.11/os.py", "# source")
    image.write("/usr/lib/python3.11/__pycache__/os.cpython-311.pyc", b"\x00")
    _, kept, _ = select(
        image, traced=traced(("/usr/lib/python3.11/__pycache__/os.cpython-311.pyc", "opened,read"))
    )
    assert Reason.BYTECODE_SOURCE in kept["/usr/lib/python3.11/os.py"].reasons


def test_user_database_is_kept_for_the_engine(image: ElfRoot) -> None:
    image.write("/etc/passwd", "root:x:0:0::/root:/bin/sh\n")
    image.write("/etc/group", "root:x:0:\n")
    _, kept, _ = select(image)
    assert kept["/etc/passwd"].reasons == (Reason.USER_DB,)
    assert kept["/etc/group"].reasons == (Reason.USER_DB,)


def test_cpython_landmarks_are_kept(image: ElfRoot) -> None:
    image.write("/usr/lib/python3.11/os.py", "# landmark, frozen since 3.11")
    image.mkdir("/usr/lib/python3.11/lib-dynload")
    image.write("/usr/lib/python3.11/json/__init__.py", "")
    rows = traced(("/usr/lib/python3.11/json/__init__.py", "opened,read"))
    _, kept, _ = select(image, traced=rows)
    assert kept["/usr/lib/python3.11/os.py"].reasons == (Reason.INTERPRETER_LANDMARK,)
    assert Reason.INTERPRETER_LANDMARK in kept["/usr/lib/python3.11/lib-dynload"].reasons


def test_directory_links_merge_into_a_base_directory(image: ElfRoot) -> None:
    image.mkdir("/usr/bin")
    image.write("/usr/bin/tool", "#!")
    rows = traced(("/usr/bin/tool", "opened,read"), ("/opt/app/bin/app", "executed"))
    # the root has /bin -> usr/bin and /lib -> usr/lib; the base has real /bin and /lib
    _, kept, dropped = select(
        image, traced=rows, includes=["/bin/tool"], base_dirs=["/bin", "/lib"]
    )
    assert "/bin" not in kept and "base image has a directory" in dropped["/bin"]
    assert kept["/bin/tool"].link == "/usr/bin/tool"
    assert kept["/bin/tool"].reasons == (Reason.BASE_MERGE,)
    libc = "/usr/lib/x86_64-linux-gnu"
    assert kept["/lib/x86_64-linux-gnu"].link == libc  # a child dir the base lacks: one link
    assert kept["/usr/bin/tool"].kind is Kind.FILE


def test_scratch_dirs_come_empty_with_their_mode(image: ElfRoot) -> None:
    image.mkdir("/tmp")
    os.chmod(image.host("/tmp"), 0o1777)
    image.write("/tmp/leftover-from-the-build", "x")
    _, kept, _ = select(image)
    assert kept["/tmp"].reasons == (Reason.SCRATCH_DIR,) and kept["/tmp"].mode == 0o1777
    assert "/tmp/leftover-from-the-build" not in kept
    assert "/var/tmp" not in kept  # not in this image: not made up


def _dpkg(image: ElfRoot, package: str, paths: list[str]) -> None:
    image.write(
        "/var/lib/dpkg/status",
        f"Package: {package}\nStatus: install ok installed\nVersion: 1.0\nArchitecture: amd64\n\n",
    )
    image.write(f"/var/lib/dpkg/info/{package}.list", "\n".join(paths) + "\n")


def test_app_content_beside_what_the_app_read(image: ElfRoot) -> None:
    """The app read one data file in its own directory: the directory's
    other files come too, and those of its subfolders; a directory of an
    OS package does not, nor one beside a package's files (bytecode
    caches), nor one the app only ran a program from."""
    image.write("/opt/app/html/index.html", "<p>index</p>")
    image.write("/opt/app/html/50x.html", "<p>error</p>")
    image.mkdir("/opt/app/html/sub")
    image.write("/opt/app/html/sub/deeper.html", "not a sibling")
    image.write("/usr/share/pkg/data.txt", "the package's")
    image.write("/usr/share/pkg/other.txt", "the package's too")
    image.write("/usr/share/pkg/__pycache__/mod.pyc", b"\x00")
    image.write("/usr/share/pkg/__pycache__/unused.pyc", b"\x00")
    image.write("/opt/app/bin/helper", "#!/bin/sh")
    _dpkg(image, "pkg", ["/usr/share/pkg", "/usr/share/pkg/data.txt", "/usr/share/pkg/other.txt"])
    rows = traced(
        ("/opt/app/html/index.html", "opened,read"),
        ("/usr/share/pkg/data.txt", "opened,read"),
        ("/usr/share/pkg/__pycache__/mod.pyc", "opened,read"),
        ("/opt/app/bin/app", "opened,executed"),
    )
    _, kept, _ = select(image, traced=rows)
    assert kept["/opt/app/html/50x.html"].reasons == (Reason.APP_CONTENT,)
    assert kept["/opt/app/html/sub/deeper.html"].reasons == (Reason.APP_CONTENT,)
    assert kept["/opt/app/html/sub/deeper.html"].detail == (
        "in /opt/app/html, from which the app read /opt/app/html/index.html"
    )
    assert "/usr/share/pkg/other.txt" not in kept
    assert "/usr/share/pkg/__pycache__/unused.pyc" not in kept
    assert "/opt/app/bin/helper" not in kept
    _, without, _ = select(image, traced=rows, app_content=False)
    assert "/opt/app/html/50x.html" not in without


def test_what_the_app_changed_keeps_the_images_bytes(image: ElfRoot) -> None:
    """sed -i replaces a config (created, in inotify's eyes), a start script
    deletes a stale file, a log is appended to: the image's own versions
    are kept. What the image did not have is not."""
    image.write("/opt/app/conf/edited.conf", "the image's version")
    image.write("/opt/app/run/stale.pid", "123")
    rows = (
        TracedFile("/opt/app/conf/edited.conf", Kind.FILE, (Access.CREATED, Access.WRITTEN)),
        TracedFile("/opt/app/run/stale.pid", "gone", (Access.DELETED,)),
        TracedFile("/opt/app/logs/old.log", Kind.FILE, (Access.WRITTEN,)),
        TracedFile("/opt/app/logs/new.log", Kind.FILE, (Access.CREATED, Access.WRITTEN)),
    )
    _, kept, dropped = select(image, traced=rows)
    for path in ("/opt/app/conf/edited.conf", "/opt/app/run/stale.pid", "/opt/app/logs/old.log"):
        assert kept[path].reasons == (Reason.APP_CHANGED,), path
    assert kept["/opt/app/conf/edited.conf"].size == len("the image's version")
    assert "created by the app" in dropped["/opt/app/logs/new.log"]


def test_volume_content_comes_along(image: ElfRoot) -> None:
    image.write("/var/lib/db/seed.sql", "CREATE TABLE t;")
    image.write("/var/lib/db/nested/more.sql", "x")
    _, kept, _ = select(
        image, volumes=["/var/lib/db"], mount_points=["/", "/var/lib/db", "/etc/hosts"]
    )
    assert Reason.VOLUME in kept["/var/lib/db/seed.sql"].reasons
    assert Reason.VOLUME in kept["/var/lib/db/nested/more.sql"].reasons


def test_directory_links_on_the_way_come_along(image: ElfRoot) -> None:
    """inotify names real directories only; links to kept directories, or
    to directories on the way to kept paths, are kept (they cost nothing)."""
    image.mkdir("/run/lock")
    image.symlink("/var/run", "/run")
    image.write("/usr/share/perl/5.36.0/strict.pm", "1;")
    image.symlink("/usr/share/perl/5.36", "5.36.0")
    image.write("/srv/releases/v1/app.conf", "v1")
    image.symlink("/srv/current", "releases/v1")
    image.symlink("/srv/unrelated", "/usr/share/doc")
    rows = (
        TracedFile("/run/lock", Kind.DIR, (Access.WRITTEN,)),
        TracedFile("/usr/share/perl/5.36.0/strict.pm", Kind.FILE, (Access.OPENED,)),
        TracedFile("/srv/releases/v1/app.conf", Kind.FILE, (Access.OPENED,)),
    )
    _, kept, _ = select(image, traced=rows)
    assert kept["/var/run"].link == "/run"
    assert kept["/usr/share/perl/5.36"].link == "5.36.0"
    assert kept["/srv/current"].link == "releases/v1"
    assert "/srv/unrelated" not in kept


def test_programs_and_libraries_read_are_not_data(image: ElfRoot) -> None:
    """The kernel opens a script's interpreter and the loader opens
    libraries: inotify sees reads, but they are not the app reading data,
    so their directories keep nothing more (an image without a package
    database included)."""
    image.write("/opt/app/bin/other-tool", "#!/bin/sh")
    rows = traced(
        ("/opt/app/bin/app", "opened,read"),  # an ELF read as the kernel does
        ("/usr/lib/x86_64-linux-gnu/libapp.so.1", "opened,read"),
    )
    _, kept, _ = select(image, traced=rows)
    assert "/opt/app/bin/other-tool" not in kept
    assert not [p for p, e in kept.items() if Reason.APP_CONTENT in e.reasons]
