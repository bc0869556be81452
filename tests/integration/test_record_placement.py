"""Package records in hostile and odd images: built here, traced and built
by real slim processes, the micro image checked with plain `docker run`.
A record never goes through a link of the image or over its file, every
kept package keeps its record, and the records keep the database's bytes."""

from __future__ import annotations

import subprocess
from pathlib import Path

from slimmer.engine import Engine
from slimmer.errors import ExitCode
from tests.helpers.images import image_tree
from tests.helpers.slimrun import SlimRun, run_slim
from tests.unit.test_records import STATUS

STATUS_D = "/var/lib/dpkg/status.d"


def traced(image: str, tmp_path: Path) -> Path:
    path = tmp_path / "trace.json"
    result = run_slim("trace", image, "--until-exit", "--quiet-app", "-o", str(path))
    assert result.exit_code == 0, result.describe()
    return path


def build(image: str, trace: Path, tag: str, *args: str) -> SlimRun:
    return run_slim("build", image, "--trace", str(trace), "-t", tag, *args)


def docker_run(tag: str, *argv: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["docker", "run", "--rm", tag, *argv], capture_output=True, timeout=120, check=False
    )


def files_in(engine: Engine, tag: str, directory: str) -> dict[str, bytes | None]:
    return image_tree(engine, tag, directory, engine.new_run_id())


def test_a_record_directory_that_links_elsewhere_is_refused(
    engine: Engine, image_from, micro_tags, tmp_path: Path
) -> None:
    """status.d is a link to /usr/bin (kept: it points to a kept
    directory): dash's record would replace /usr/bin/dash. The build says
    so; leaving the link out builds an image whose dash runs and whose
    record is in a real directory."""
    image = image_from(
        {
            "Dockerfile": "FROM debian:bookworm\n"
            f"RUN ln -s /usr/bin {STATUS_D}\n"
            'CMD ["/usr/bin/dash", "-c", "echo dash-runs"]\n'
        }
    )
    trace = traced(image, tmp_path)
    refused = build(image, trace, micro_tags())
    assert refused.exit_code == ExitCode.ERROR, refused.describe()
    assert f"{STATUS_D} is a symlink in the image" in refused.stderr
    assert "Traceback" not in refused.stderr
    tag = micro_tags()
    built = build(image, trace, tag, "--exclude", STATUS_D)
    assert built.exit_code == 0, built.describe()
    ran = docker_run(tag)
    assert ran.returncode == 0 and ran.stdout == b"dash-runs\n", ran.stderr
    records = files_in(engine, tag, STATUS_D)
    assert records["status.d"] is None and records["status.d/dash"].startswith(b"Package: dash\n")


def test_a_directory_where_a_record_goes_is_refused(image_from, micro_tags, tmp_path: Path) -> None:
    """The image has a directory status.d/dash (the app reads a file in
    it): dash's record cannot be written there; the build says so (it
    used to fail in docker build, exit 4)."""
    image = image_from(
        {
            "Dockerfile": "FROM debian:bookworm\n"
            f"RUN mkdir -p {STATUS_D}/dash && echo data > {STATUS_D}/dash/x\n"
            f'CMD ["/usr/bin/dash", "-c", "read line < {STATUS_D}/dash/x; echo $line"]\n'
        }
    )
    refused = build(image, traced(image, tmp_path), micro_tags())
    assert refused.exit_code == ExitCode.ERROR, refused.describe()
    assert f"the image has a dir at {STATUS_D}/dash" in refused.stderr


def test_every_kept_package_keeps_its_record_with_its_bytes(
    engine: Engine, image_from, micro_tags, tmp_path: Path
) -> None:
    """Packages foo and foo.md5sums (whose stanza would be foo's digest
    file), and dash with a Latin-1 Maintainer (a traceback before): each
    has its record in the micro image, byte for byte."""
    image = image_from(
        {
            "status": STATUS,
            "Dockerfile": "FROM debian:bookworm\n"
            "COPY status /tmp/status\n"
            "RUN printf '\\n' >> /var/lib/dpkg/status && cat /tmp/status >> /var/lib/dpkg/status"
            " && rm /tmp/status"
            " && sed -i '/^Package: dash$/,/^$/ s/^Maintainer: .*/Maintainer: Andr\\xe9 <a@b.c>/'"
            " /var/lib/dpkg/status"
            " && mkdir -p /opt/foo /opt/md && echo a > /opt/foo/a && echo b > /opt/md/b"
            " && printf '/opt/foo\\n/opt/foo/a\\n' > /var/lib/dpkg/info/foo.list"
            " && printf '/opt/md\\n/opt/md/b\\n' > /var/lib/dpkg/info/foo.md5sums.list"
            " && (cd / && md5sum opt/foo/a > /var/lib/dpkg/info/foo.md5sums"
            " && md5sum opt/md/b > /var/lib/dpkg/info/foo.md5sums.md5sums)\n"
            'CMD ["/usr/bin/dash", "-c", "read a < /opt/foo/a; read b < /opt/md/b; echo $a$b"]\n',
        }
    )
    tag = micro_tags()
    built = build(image, traced(image, tmp_path), tag)
    assert built.exit_code == 0, built.describe()
    assert docker_run(tag).stdout == b"ab\n"
    records = files_in(engine, tag, STATUS_D)
    assert b"\nMaintainer: Jos\xe9 M\xe4intainer <jose@example.org>\n" in (
        records["status.d/foo"] or b""
    )
    assert (records["status.d/foo.md5sums"] or b"").endswith(b"  opt/foo/a\n")
    assert (records["status.d/foo.md5sums:amd64"] or b"").startswith(b"Package: foo.md5sums\n")
    assert (records["status.d/foo.md5sums:amd64.md5sums"] or b"").endswith(b"  opt/md/b\n")
    assert b"\nMaintainer: Andr\xe9 <a@b.c>\n" in (records["status.d/dash"] or b"")


def test_an_apk_record_that_is_not_utf8_keeps_its_bytes(
    engine: Engine, image_from, micro_tags, tmp_path: Path
) -> None:
    """An apk database (here over busybox's files) whose T: line is
    Latin-1: the micro image's database has the same bytes."""
    image = image_from(
        {
            "Dockerfile": "FROM busybox:latest\n"
            "RUN mkdir -p /lib/apk/db && printf 'P:busybox\\nV:1.36.1-r0\\nA:x86_64\\n"
            "T:caf\\351 box\\nF:bin\\nR:cat\\nR:sh\\n\\n' > /lib/apk/db/installed\n"
            'CMD ["/bin/sh", "-c", "cat /etc/hostname >/dev/null; echo apk"]\n'
        }
    )
    tag = micro_tags()
    built = build(image, traced(image, tmp_path), tag)
    assert built.exit_code == 0, built.describe()
    assert docker_run(tag).stdout == b"apk\n"
    database = files_in(engine, tag, "/lib/apk/db/installed")["installed"] or b""
    assert b"\nT:caf\xe9 box\n" in database
