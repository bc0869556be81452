"""The package records of a micro image: their names, their bytes, and the
rule that they go only where the micro image has nothing (never through a
link of the image, never over its file). Databases read from synthetic
roots, as an image lays them out."""

from __future__ import annotations

from pathlib import Path

import pytest

from slimmer.fileset import Entry, Reason
from slimmer.packages import read_package_db
from slimmer.records import PlacementError, check_placement, package_records
from slimmer.rootfs import Kind, RootFS

STATUS = b"""\
Package: foo
Status: install ok installed
Priority: optional
Maintainer: Jos\xe9 M\xe4intainer <jose@example.org>
Architecture: amd64
Version: 1.0
Description: foo

Package: foo.md5sums
Status: install ok installed
Priority: optional
Maintainer: Someone <s@example.org>
Architecture: amd64
Version: 2.0
Description: a package whose name ends like a digest file
"""


def write(root: Path, path: str, data: bytes) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write(tmp_path, "/var/lib/dpkg/status", STATUS)
    write(tmp_path, "/var/lib/dpkg/info/foo.list", b"/opt/foo\n/opt/foo/a\n")
    write(tmp_path, "/var/lib/dpkg/info/foo.md5sums", b"a" * 32 + b"  opt/foo/a\n")
    write(tmp_path, "/var/lib/dpkg/info/foo.md5sums.list", b"/opt/md\n/opt/md/b\n")
    write(tmp_path, "/var/lib/dpkg/info/foo.md5sums.md5sums", b"b" * 32 + b"  opt/md/b\n")
    write(tmp_path, "/opt/foo/a", b"a")
    write(tmp_path, "/opt/md/b", b"b")
    return tmp_path


def records_of(root: Path) -> dict[str, bytes]:
    fs = RootFS(root)
    kept = read_package_db(fs).kept(fs, ["/opt/foo/a", "/opt/md/b"])
    return {record.path: record.data for record in package_records(kept)}


def test_a_package_named_like_a_digest_file_keeps_its_record(root: Path) -> None:
    """foo's digests are status.d/foo.md5sums; the package foo.md5sums has
    its stanza at foo.md5sums:amd64 (a name no scanner reads as digests)."""
    records = records_of(root)
    directory = "/var/lib/dpkg/status.d"
    assert set(records) == {
        f"{directory}/foo",
        f"{directory}/foo.md5sums",
        f"{directory}/foo.md5sums:amd64",
        f"{directory}/foo.md5sums:amd64.md5sums",
    }
    assert records[f"{directory}/foo.md5sums"] == b"a" * 32 + b"  opt/foo/a\n"
    assert records[f"{directory}/foo.md5sums:amd64"].startswith(b"Package: foo.md5sums\n")
    assert records[f"{directory}/foo.md5sums:amd64.md5sums"] == b"b" * 32 + b"  opt/md/b\n"


def test_a_record_that_is_not_utf8_keeps_its_bytes(root: Path) -> None:
    stanza = records_of(root)["/var/lib/dpkg/status.d/foo"]
    assert b"Maintainer: Jos\xe9 M\xe4intainer <jose@example.org>\n" in stanza


def test_an_apk_record_that_is_not_utf8_keeps_its_bytes(tmp_path: Path) -> None:
    write(
        tmp_path,
        "/lib/apk/db/installed",
        b"P:tool\nV:1.0-r0\nA:x86_64\nT:caf\xe9 tool\nF:usr/bin\nR:tool\nZ:Q1abc=\n\n",
    )
    write(tmp_path, "/usr/bin/tool", b"x")
    fs = RootFS(tmp_path)
    kept = read_package_db(fs).kept(fs, ["/usr/bin/tool"])
    (record,) = package_records(kept)
    assert b"\nT:caf\xe9 tool\n" in record.data


def entry(path: str, kind: Kind, reason: Reason = Reason.SYMLINK) -> Entry:
    return Entry(
        path, kind, (reason,), 0, 0o755, 0, 0, 0, link="/usr/bin" if kind is Kind.SYMLINK else None
    )


@pytest.mark.parametrize(
    ("kept", "named"),
    [
        # status.d a link to /usr/bin: the record of dash would be /usr/bin/dash
        ([entry("/var/lib/dpkg/status.d", Kind.SYMLINK)], "/var/lib/dpkg/status.d is a symlink"),
        # /var/lib/dpkg a file
        ([entry("/var/lib/dpkg", Kind.FILE, Reason.TRACED)], "/var/lib/dpkg is a file"),
        # a directory where foo's record goes
        (
            [entry("/var/lib/dpkg/status.d/foo", Kind.DIR, Reason.LISTED_DIR)],
            "has a dir at /var/lib/dpkg/status.d/foo",
        ),
        # the image's own file where the record goes
        (
            [entry("/var/lib/dpkg/status.d/foo", Kind.FILE, Reason.INCLUDE)],
            "has a file at /var/lib/dpkg/status.d/foo",
        ),
    ],
)
def test_records_never_go_through_a_link_or_over_a_file_of_the_image(
    root: Path, kept: list[Entry], named: str
) -> None:
    fs = RootFS(root)
    records = package_records(read_package_db(fs).kept(fs, ["/opt/foo/a"]))
    with pytest.raises(PlacementError) as refused:
        check_placement(records, [entry("/var", Kind.DIR), *kept])
    assert named in refused.value.message and "--no-package-records" in (refused.value.hint or "")


def test_records_go_where_the_image_has_real_directories_or_nothing(root: Path) -> None:
    fs = RootFS(root)
    records = package_records(read_package_db(fs).kept(fs, ["/opt/foo/a"]))
    dirs = [entry(path, Kind.DIR) for path in ("/var", "/var/lib", "/var/lib/dpkg")]
    check_placement(records, dirs)
    with pytest.raises(PlacementError, match="the base image has a directory"):
        check_placement(records, dirs, base_dirs=["/var/lib/dpkg/status.d/foo"])
