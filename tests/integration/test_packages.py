"""The package records slim writes for a real Debian image, checked against
what dpkg itself says in a container of that image."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from slimmer.engine import Engine
from slimmer.packages import KeptPackages
from slimmer.records import dpkg_records, dpkg_stanza
from tests.helpers.inimage import run_in_image

KEPT = [
    "/usr/bin/python3.11",
    "/usr/lib/x86_64-linux-gnu/libc.so.6",
    "/usr/lib/x86_64-linux-gnu/libssl.so.3",
    "/usr/lib/x86_64-linux-gnu/libz.so.1",  # a symlink: no md5sum
    "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13",  # what it points to (a build keeps both)
    "/usr/lib64/ld-linux-x86-64.so.2",  # listed by libc6 as /lib64/...
    "/etc/ssl/openssl.cnf",  # a conffile of openssl
]

PROBE = """
from slimmer.packages import read_package_db
from slimmer.rootfs import RootFS
fs = RootFS("/")
db = read_package_db(fs)
answer(db.kept(fs, INPUT).to_json())
"""


def stanzas(text: str) -> dict[str, dict[str, str]]:
    """dpkg-query -s output, by Package:Architecture."""
    result = {}
    for block in text.strip().split("\n\n"):
        fields: dict[str, str] = {}
        last = ""
        for line in block.split("\n"):
            if line[:1] in (" ", "\t"):
                fields[last] += "\n" + line
            else:
                last, _, value = line.partition(":")
                fields[last] = value.strip()
        result[f"{fields['Package']}:{fields['Architecture']}"] = fields
    return result


def test_records_match_dpkg_query(
    engine: Engine, fixture_image: Callable[[str], str], run_id: str, tmp_path: Path
) -> None:
    image = fixture_image("pyapp")
    kept = KeptPackages.from_json(run_in_image(engine, image, run_id, tmp_path, PROBE, KEPT))
    names = {k.package.name for k in kept.packages}
    assert {"python3.11-minimal", "libc6", "libssl3", "zlib1g", "openssl"} <= names
    assert kept.os_release.purl_distro == "debian-12"

    keys = [k.package.key for k in kept.packages]
    status, out, err = engine.run_to_exit(
        image, ["dpkg-query", "-s", *keys], run_id, user="0", entrypoint=[]
    )
    assert status == 0, err.decode()
    truth = stanzas(out.decode())
    assert set(truth) == set(keys)
    for item in kept.packages:
        ours = stanzas(dpkg_stanza(item))[item.package.key]
        theirs = dict(truth[item.package.key])
        if "Conffiles" in theirs:
            kept_conffiles = [
                line
                for line in theirs.pop("Conffiles").split("\n")
                if line.split() and line.split()[0] in KEPT
            ]
            if kept_conffiles:
                theirs["Conffiles"] = "\n".join(["", *kept_conffiles])
        assert ours == theirs, item.package.key

    # the md5sums slim writes are those of the files in the image
    md5sums = {f.path: f.data.decode() for f in dpkg_records(kept) if f.path.endswith(".md5sums")}
    listed = [line.split("  ", 1) for text in md5sums.values() for line in text.splitlines()]
    # regular files only: symlinks have no md5sum, conffiles are in Conffiles
    assert {path for _, path in listed} == {
        "usr/bin/python3.11",
        "lib/x86_64-linux-gnu/libc.so.6",  # as dpkg installed it
        "lib/x86_64-linux-gnu/libz.so.1.2.13",
        "usr/lib/x86_64-linux-gnu/libssl.so.3",
    }
    status, out, err = engine.run_to_exit(
        image, ["md5sum", *("/" + path for _, path in listed)], run_id, user="0", entrypoint=[]
    )
    assert status == 0, err.decode()
    actual = {line.split("  ", 1)[1]: line.split("  ", 1)[0] for line in out.decode().splitlines()}
    assert {"/" + path: digest for digest, path in listed} == actual
    stanza = next(f for f in dpkg_records(kept) if f.path.endswith("/openssl"))
    assert "/etc/ssl/openssl.cnf" in stanza.data.decode()
