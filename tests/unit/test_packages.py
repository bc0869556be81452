"""The package database of an image: dpkg, distroless status.d and apk,
read from synthetic roots laid out like real ones (merged /usr, multi-arch
list names, diversions), and the trimmed records written back."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slimmer import packages
from slimmer.packages import (
    APK_INSTALLED,
    FileRecord,
    KeptPackage,
    KeptPackages,
    Package,
    PackageManager,
    parse_os_release,
    read_package_db,
)
from slimmer.records import apk_installed, dpkg_records, package_records
from slimmer.rootfs import RootFS

MULTIARCH = "usr/lib/x86_64-linux-gnu"

STATUS = """\
Package: libc6
Status: install ok installed
Priority: optional
Section: libs
Installed-Size: 12000
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>
Architecture: amd64
Multi-Arch: same
Source: glibc
Version: 2.36-9+deb12u4
Conffiles:
 /etc/ld.so.conf.d/x86_64-linux-gnu.conf d4e7a7b88a71b5ffd9e2644e71a0cfab
Description: GNU C Library: Shared libraries
 Contains the standard libraries that are used by nearly all programs on
 the system.

Package: zlib1g
Status: install ok installed
Priority: optional
Architecture: amd64
Multi-Arch: same
Source: zlib (1:1.2.13.dfsg-1)
Version: 1:1.2.13.dfsg-1
Description: compression library - runtime

Package: old-tool
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0

Package: broken
Architecture amd64
Version: 1.0

Package: ../../etc/evil
Status: install ok installed
Architecture: amd64
Version: 1.0

Package: dash
Essential: yes
Status: install ok installed
Priority: required
Architecture: amd64
Version: 0.5.12-2
Description: POSIX-compliant shell
"""


def write(root: Path, path: str, content: str | bytes, mode: int = 0o644) -> Path:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content.encode() if isinstance(content, str) else content)
    target.chmod(mode)
    return target


@pytest.fixture
def debian_root(tmp_path: Path) -> Path:
    """Merged /usr like Debian 12: /lib -> usr/lib, /bin -> usr/bin; the
    lists name files as installed (/lib/..., /bin/...)."""
    root = tmp_path / "debian"
    (root / MULTIARCH).mkdir(parents=True)
    (root / "usr/bin").mkdir(parents=True)
    os.symlink("usr/lib", root / "lib")
    os.symlink("usr/bin", root / "bin")
    write(root, f"{MULTIARCH}/libc.so.6", b"\x7fELF libc")
    write(root, f"{MULTIARCH}/libm.so.6", b"\x7fELF libm")
    write(root, f"{MULTIARCH}/libz.so.1.2.13", b"\x7fELF libz")
    os.symlink("libz.so.1.2.13", root / MULTIARCH / "libz.so.1")
    write(root, "usr/bin/dash", b"\x7fELF dash", 0o755)
    write(root, "usr/share/man/man1/sh.distrib.1.gz", b"man page")
    write(root, "etc/ld.so.conf.d/x86_64-linux-gnu.conf", "/usr/local/lib/x86_64-linux-gnu\n")
    write(root, "var/lib/dpkg/status", STATUS)
    write(
        root,
        "var/lib/dpkg/info/libc6:amd64.list",
        "/.\n/etc\n/etc/ld.so.conf.d\n/etc/ld.so.conf.d/x86_64-linux-gnu.conf\n/lib\n"
        "/lib/x86_64-linux-gnu\n/lib/x86_64-linux-gnu/libc.so.6\n"
        "/lib/x86_64-linux-gnu/libm.so.6\n",
    )
    write(
        root,
        "var/lib/dpkg/info/libc6:amd64.md5sums",
        "11111111111111111111111111111111  lib/x86_64-linux-gnu/libc.so.6\n"
        "22222222222222222222222222222222  lib/x86_64-linux-gnu/libm.so.6\n",
    )
    write(
        root,
        "var/lib/dpkg/info/zlib1g:amd64.list",
        "/.\n/lib\n/lib/x86_64-linux-gnu\n/lib/x86_64-linux-gnu/libz.so.1\n"
        "/lib/x86_64-linux-gnu/libz.so.1.2.13\n",
    )
    write(
        root,
        "var/lib/dpkg/info/dash.list",
        "/.\n/bin\n/bin/dash\n/bin/sh\n/usr\n/usr/share\n/usr/share/man\n/usr/share/man/man1\n"
        "/usr/share/man/man1/sh.1.gz\n",
    )
    write(root, "var/lib/dpkg/info/dash.md5sums", f"{'4' * 32}  bin/dash\n")
    # dash diverts nothing here; a local diversion moves another file
    write(
        root,
        "var/lib/dpkg/diversions",
        "/usr/share/man/man1/sh.1.gz\n/usr/share/man/man1/sh.distrib.1.gz\nbash\n",
    )
    write(root, "etc/os-release", 'ID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\n')
    return root


def test_ownership_is_matched_on_canonical_paths(debian_root: Path) -> None:
    db = read_package_db(RootFS(debian_root))
    assert db.manager is PackageManager.DPKG
    assert [p.key for p in db.packages] == ["dash:amd64", "libc6:amd64", "zlib1g:amd64"]
    libc = db.owner(f"/{MULTIARCH}/libc.so.6")
    assert libc is not None and libc.name == "libc6"
    # a package owns its symlink as listed, not the link's target
    assert db.owner(f"/{MULTIARCH}/libz.so.1").name == "zlib1g"  # type: ignore[union-attr]
    assert db.owner("/usr/bin/dash").name == "dash"  # type: ignore[union-attr]
    # the directory a package lists is not a file it owns
    assert db.owner(f"/{MULTIARCH}") is None
    assert {p.name for p in db.owners(f"/{MULTIARCH}")} == {"libc6", "zlib1g"}
    # the unmerged name is nothing of the image's
    assert db.owners("/lib/x86_64-linux-gnu/libc.so.6") == ()


def test_package_facts_source_and_essential(debian_root: Path) -> None:
    db = read_package_db(RootFS(debian_root))
    libc, zlib, dash = (
        db.package("libc6:amd64"),
        db.package("zlib1g:amd64"),
        db.package("dash:amd64"),
    )
    assert (libc.source, libc.source_version) == ("glibc", "2.36-9+deb12u4")
    assert (zlib.source, zlib.source_version) == ("zlib", "1:1.2.13.dfsg-1")
    assert (dash.source, dash.essential, dash.priority) == ("dash", True, "required")
    assert libc.field("description") == (
        "GNU C Library: Shared libraries\n"
        " Contains the standard libraries that are used by nearly all programs on\n"
        " the system."
    )


def test_bad_stanzas_are_skipped_with_a_warning(debian_root: Path) -> None:
    db = read_package_db(RootFS(debian_root))
    names = {p.name for p in db.packages}
    assert "old-tool" not in names  # config-files only: nothing on disk
    assert "broken" not in names
    assert not any("evil" in name for name in names)
    warnings = "\n".join(db.warnings)
    assert "is not a field" in warnings
    assert "'../../etc/evil'" in warnings


def test_diversion_moves_a_file_of_another_package(debian_root: Path) -> None:
    db = read_package_db(RootFS(debian_root))
    # dash lists sh.1.gz; bash diverted it to sh.distrib.1.gz: dash's copy lives there
    assert db.owner("/usr/share/man/man1/sh.distrib.1.gz").name == "dash"  # type: ignore[union-attr]
    assert db.owner("/usr/share/man/man1/sh.1.gz") is None


def test_kept_packages_digests_and_trimmed_records(debian_root: Path) -> None:
    fs = RootFS(debian_root)
    db = read_package_db(fs)
    kept = db.kept(fs, ["/", "/usr", "/usr/lib", f"/{MULTIARCH}", f"/{MULTIARCH}/libc.so.6"])
    assert [k.package.name for k in kept.packages] == ["libc6"]
    (libc,) = kept.packages
    files = {r.path: r for r in libc.kept_files}
    assert files[f"/{MULTIARCH}/libc.so.6"].digest == "1" * 32
    assert kept.os_release.purl_distro == "debian-12"

    records = {f.path: f.data.decode() for f in dpkg_records(kept)}
    assert set(records) == {
        "/var/lib/dpkg/status.d/libc6",
        "/var/lib/dpkg/status.d/libc6.md5sums",
    }
    stanza = records["/var/lib/dpkg/status.d/libc6"]
    assert stanza.startswith("Package: libc6\nStatus: install ok installed\n")
    assert "Source: glibc\nVersion: 2.36-9+deb12u4\n" in stanza
    assert "Conffiles" not in stanza  # its conffile is not kept
    assert stanza.endswith(" the system.\n")
    assert records["/var/lib/dpkg/status.d/libc6.md5sums"] == (
        f"{'1' * 32}  lib/x86_64-linux-gnu/libc.so.6\n"
    )


def test_a_package_with_only_links_kept_gets_no_record(debian_root: Path) -> None:
    """libz-dev lists libz.so, a link to zlib1g's libz.so.1.2.13: with only
    the link kept, a record for it would make a scanner report zlib's CVEs
    twice, once under a -dev name. The link is counted with zlib1g; a link
    to a file no package installed is counted with none."""
    root = debian_root
    os.symlink("libz.so.1.2.13", root / MULTIARCH / "libz.so")
    os.symlink("/opt/app/lib/libapp.so.1", root / MULTIARCH / "libapp.so")
    write(root, "opt/app/lib/libapp.so.1", b"\x7fELF app")
    status = (root / "var/lib/dpkg/status").read_text()
    for name in ("libz-dev", "libapp-dev"):
        status += (
            f"\nPackage: {name}\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.0\n"
        )
    write(root, "var/lib/dpkg/status", status)
    write(
        root, "var/lib/dpkg/info/libz-dev:amd64.list", "/.\n/lib\n/lib/x86_64-linux-gnu/libz.so\n"
    )
    write(root, "var/lib/dpkg/info/libapp-dev:amd64.list", "/usr/lib/x86_64-linux-gnu/libapp.so\n")
    fs = RootFS(root)
    kept_paths = [
        f"/{MULTIARCH}/libz.so",
        f"/{MULTIARCH}/libz.so.1.2.13",
        f"/{MULTIARCH}/libapp.so",
        "/opt/app/lib/libapp.so.1",
    ]
    kept = read_package_db(fs).kept(fs, kept_paths)
    assert [k.package.name for k in kept.packages] == ["zlib1g"]
    (zlib,) = kept.packages
    assert {r.path for r in zlib.kept_files} == {
        f"/{MULTIARCH}/libz.so",
        f"/{MULTIARCH}/libz.so.1.2.13",
    }
    assert sorted(kept.moved_links, key=lambda m: m.path) == [
        packages.MovedLink(
            "libapp-dev:amd64", f"/{MULTIARCH}/libapp.so", "/opt/app/lib/libapp.so.1", None
        ),
        packages.MovedLink(
            "libz-dev:amd64",
            f"/{MULTIARCH}/libz.so",
            f"/{MULTIARCH}/libz.so.1.2.13",
            "zlib1g:amd64",
        ),
    ]
    records = {f.path for f in dpkg_records(kept)}
    assert records == {"/var/lib/dpkg/status.d/zlib1g"}  # no record for either -dev
    owners = kept.owner_map()
    assert owners[f"/{MULTIARCH}/libz.so"].name == "zlib1g"  # its layer is zlib1g's
    assert f"/{MULTIARCH}/libapp.so" not in owners


def test_kept_conffile_stays_in_the_stanza(debian_root: Path) -> None:
    fs = RootFS(debian_root)
    kept = read_package_db(fs).kept(fs, ["/etc/ld.so.conf.d/x86_64-linux-gnu.conf"])
    stanza = dpkg_records(kept)[0].data.decode()
    assert (
        "Conffiles:\n /etc/ld.so.conf.d/x86_64-linux-gnu.conf d4e7a7b88a71b5ffd9e2644e71a0cfab\n"
        in stanza
    )


def test_records_read_back_as_the_distroless_layout(debian_root: Path, tmp_path: Path) -> None:
    """What slim writes is what a reader of status.d sees: same packages,
    same versions, the kept files owned."""
    fs = RootFS(debian_root)
    kept_paths = [
        f"/{MULTIARCH}/libc.so.6",
        f"/{MULTIARCH}/libz.so.1",
        f"/{MULTIARCH}/libz.so.1.2.13",
        "/usr/bin/dash",
    ]
    kept = read_package_db(fs).kept(fs, kept_paths)
    micro = tmp_path / "micro"
    (micro / MULTIARCH).mkdir(parents=True)
    (micro / "usr/bin").mkdir()
    os.symlink("usr/lib", micro / "lib")
    os.symlink("usr/bin", micro / "bin")
    for generated in package_records(kept):
        write(micro, generated.path, generated.data)
    reread = read_package_db(RootFS(micro))
    assert [(p.key, p.version, p.source) for p in reread.packages] == [
        (k.package.key, k.package.version, k.package.source) for k in kept.packages
    ]
    assert reread.owner(f"/{MULTIARCH}/libc.so.6").name == "libc6"  # type: ignore[union-attr]
    # zlib has no md5sums here, so status.d names none of its files; the
    # package record is there all the same
    assert "zlib1g" in {p.name for p in reread.packages}
    assert reread.owner("/usr/bin/dash").name == "dash"  # type: ignore[union-attr]


def test_same_name_two_architectures_get_distinct_records(debian_root: Path) -> None:
    status = debian_root / "var/lib/dpkg/status"
    status.write_text(
        status.read_text() + "\nPackage: libc6\nStatus: install ok installed\nArchitecture: i386\n"
        "Multi-Arch: same\nVersion: 2.36-9+deb12u4\n"
    )
    write(debian_root, "usr/lib/i386-linux-gnu/libc.so.6", b"\x7fELF 32")
    write(debian_root, "var/lib/dpkg/info/libc6:i386.list", "/lib/i386-linux-gnu/libc.so.6\n")
    fs = RootFS(debian_root)
    kept = read_package_db(fs).kept(
        fs, [f"/{MULTIARCH}/libc.so.6", "/usr/lib/i386-linux-gnu/libc.so.6"]
    )
    names = [f.path.rsplit("/", 1)[1] for f in dpkg_records(kept)]
    assert "libc6:amd64" in names and "libc6:i386" in names


def test_oversized_database_is_refused_not_read(
    debian_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(packages, "MAX_DATABASE_BYTES", 100)
    db = read_package_db(RootFS(debian_root))
    assert len(db) == 0
    assert any("larger than 100 bytes" in w for w in db.warnings)


def test_database_files_that_are_links_out_of_the_root_stay_inside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "var/lib/dpkg").mkdir(parents=True)
    outside = tmp_path / "host-status"
    outside.write_text("Package: host-only\nStatus: install ok installed\nVersion: 1\n")
    os.symlink(str(outside), root / "var/lib/dpkg/status")
    db = read_package_db(RootFS(root))
    assert len(db) == 0  # the absolute link resolves inside the root: not there


def test_distroless_status_d_is_read(tmp_path: Path) -> None:
    root = tmp_path / "distroless"
    write(root, "usr/lib/x86_64-linux-gnu/libssl.so.3", b"\x7fELF")
    write(
        root,
        "var/lib/dpkg/status.d/libssl3",
        "Package: libssl3\nSource: openssl\nVersion: 3.0.11-1~deb12u2\n"
        "Architecture: amd64\nMaintainer: Debian OpenSSL Team\nDescription: SSL\n",
    )
    write(
        root,
        "var/lib/dpkg/status.d/libssl3.md5sums",
        "33333333333333333333333333333333  usr/lib/x86_64-linux-gnu/libssl.so.3\n",
    )
    db = read_package_db(RootFS(root))
    (package,) = db.packages
    assert (package.name, package.source, package.source_version) == (
        "libssl3",
        "openssl",
        "3.0.11-1~deb12u2",
    )
    assert db.owner("/usr/lib/x86_64-linux-gnu/libssl.so.3") == package


APK_DB = """\
C:Q1abcdefabcdefabcdefabcdefabcde=
P:musl
V:1.2.4-r2
A:x86_64
S:383152
I:622592
T:the musl c library (libc) implementation
U:https://musl.libc.org/
L:MIT
o:musl
m:Natanael Copa <ncopa@alpinelinux.org>
t:1695310580
F:lib
R:ld-musl-x86_64.so.1
a:0:0:755
Z:Q1w5QBnzpgnBGgHzUmzCQ+OBRBzns=
R:libc.musl-x86_64.so.1
a:0:0:777
Z:Q17yJ3JFNypA4mxhJJr0ou6CzsJVI=

P:zlib
V:1.3.1-r0
A:x86_64
o:zlib
F:lib
R:libz.so.1
Z:Q1r9s4f8xOgmLpfkYwLPSCRmvVaQk=
R:libz.so.1.3.1
Z:Q1abcabcabcabcabcabcabcabcabcab=
F:usr
F:usr/share

garbage without a letter

P:
V:1
"""


@pytest.fixture
def alpine_root(tmp_path: Path) -> Path:
    root = tmp_path / "alpine"
    write(root, "lib/ld-musl-x86_64.so.1", b"\x7fELF musl", 0o755)
    os.symlink("ld-musl-x86_64.so.1", root / "lib/libc.musl-x86_64.so.1")
    write(root, "lib/libz.so.1.3.1", b"\x7fELF zlib")
    os.symlink("libz.so.1.3.1", root / "lib/libz.so.1")
    write(root, APK_INSTALLED, APK_DB)
    write(root, "etc/os-release", 'ID=alpine\nVERSION_ID=3.19.1\nPRETTY_NAME="Alpine Linux"\n')
    return root


def test_apk_database_and_trimmed_installed(alpine_root: Path) -> None:
    fs = RootFS(alpine_root)
    db = read_package_db(fs)
    assert db.manager is PackageManager.APK
    assert [p.name for p in db.packages] == ["musl", "zlib"]
    musl = db.package("musl")
    assert (musl.version, musl.architecture, musl.source) == ("1.2.4-r2", "x86_64", "musl")
    assert db.owner("/lib/ld-musl-x86_64.so.1") == musl
    assert any("not a record" in w for w in db.warnings)

    kept = db.kept(fs, ["/lib", "/lib/ld-musl-x86_64.so.1", "/lib/libz.so.1.3.1"])
    text = apk_installed(kept)
    assert "R:libc.musl-x86_64.so.1" not in text
    assert "R:ld-musl-x86_64.so.1\na:0:0:755\nZ:Q1w5QBnzpgnBGgHzUmzCQ+OBRBzns=\n" in text
    assert "F:usr" not in text and "R:libz.so.1\n" not in text
    assert text.startswith("C:Q1abcdefabcdefabcdefabcdefabcde=\nP:musl\nV:1.2.4-r2\n")
    # and it reads back: same packages, the kept files owned
    micro = alpine_root.parent / "micro"
    for generated in package_records(kept):
        write(micro, generated.path, generated.data)
    write(micro, "lib/libz.so.1.3.1", b"")
    reread = read_package_db(RootFS(micro))
    assert [(p.name, p.version) for p in reread.packages] == [
        ("musl", "1.2.4-r2"),
        ("zlib", "1.3.1-r0"),
    ]
    assert reread.owner("/lib/libz.so.1.3.1").name == "zlib"  # type: ignore[union-attr]
    assert kept.os_release.purl_distro == "alpine-3.19.1"


def test_rpm_database_is_named_not_read(tmp_path: Path) -> None:
    root = tmp_path / "fedora"
    write(root, "var/lib/rpm/rpmdb.sqlite", b"SQLite format 3\0")
    db = read_package_db(RootFS(root))
    assert db.manager is None and len(db) == 0
    assert any("rpm package databases are not read" in w for w in db.warnings)


def test_kept_packages_survive_json(debian_root: Path) -> None:
    fs = RootFS(debian_root)
    kept = read_package_db(fs).kept(fs, [f"/{MULTIARCH}/libc.so.6", "/usr/bin/dash"])
    again = KeptPackages.from_json(json.loads(json.dumps(kept.to_json())))
    assert again == kept


def test_os_release_quoting() -> None:
    release = parse_os_release(
        'NAME="Debian GNU/Linux"\nID=debian\nID_LIKE="rhel fedora"\n'
        'VERSION_ID=\'12\'\n# comment\nPRETTY_NAME="a \\"quoted\\" name"\n'
    )
    assert (release.id, release.version_id, release.id_like) == ("debian", "12", ("rhel", "fedora"))
    assert release.pretty_name == 'a "quoted" name'


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("PVA:Fa/R \n\t.-xyz019()#")), max_size=400))
def test_garbage_never_raises(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    root = tmp_path_factory.mktemp("garbage")
    write(root, "var/lib/dpkg/status", text)
    write(root, "var/lib/dpkg/info/x.list", text)
    write(root, APK_INSTALLED, text)
    fs = RootFS(root)
    db = read_package_db(fs)
    kept = db.kept(fs, [r.path for p in db.packages for r in db.files(p)])
    package_records(kept)
    # and the apk reader alone
    (root / "var/lib/dpkg/status").unlink()
    apk_db = read_package_db(fs)
    package_records(apk_db.kept(fs, [r.path for p in apk_db.packages for r in apk_db.files(p)]))


def test_records_from_a_tampered_answer_stay_well_formed() -> None:
    """The kept packages come back from a container of the image: values
    that would end a stanza or add a record are neutralised."""
    package = Package(
        PackageManager.DPKG,
        "libfoo",
        "1.0",
        "amd64",
        "foo",
        "1.0",
        fields=(
            ("Package", "libfoo"),
            ("Version", "1.0"),
            ("Description", "short\n\nPackage: injected\nVersion: 6.6"),
            ("Bad Name", "x"),
        ),
    )
    record = FileRecord("/usr/lib/libfoo.so.1", "/usr/lib/libfoo.so.1", False, "5" * 32)
    kept = KeptPackages(PackageManager.DPKG, (KeptPackage(package, (record,)),))
    (stanza, _) = dpkg_records(kept)
    text = stanza.data.decode()
    assert "\n\n" not in text and "Bad Name" not in text
    assert text.count("\nPackage:") == 0 and text.startswith("Package: libfoo\n")
    evil = Package(PackageManager.DPKG, "../../etc/cron.d/x", "1", "amd64", "x", "1")
    assert dpkg_records(KeptPackages(PackageManager.DPKG, (KeptPackage(evil, (record,)),))) == ()
    apk = Package(
        PackageManager.APK, "x", "1", "x86_64", "x", "1", fields=(("P", "x\nP:y"), ("V", "1"))
    )
    crafted = FileRecord("/lib/a\nR:b", "/lib/a", False)
    text = apk_installed(KeptPackages(PackageManager.APK, (KeptPackage(apk, (crafted,)),)))
    assert "P:y" not in text and "R:b" not in text
