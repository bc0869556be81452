"""slim build on real images: the micro image answers like the fat one and
keeps its contract, its owners, modes, setuid bits and hard links."""

from __future__ import annotations

import io
import json
import stat
import subprocess
import tarfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from slimmer.cli import cli
from slimmer.engine import Engine
from slimmer.errors import ExitCode
from slimmer.trace import file_safe
from tests.conftest import session_tag
from tests.helpers.images import derive_image
from tests.helpers.schemas import assert_valid
from tests.helpers.serve import serve_and_get
from tests.helpers.slimrun import run_slim

MIB = 1024 * 1024


@pytest.fixture
def micro(engine: Engine, tmp_path: Path) -> Iterator[Callable[..., tuple[str, dict]]]:
    """Trace and build a micro image through the CLI; removed afterwards."""
    tags: list[str] = []

    def make(image: str, *trace_args: str, build_args: tuple[str, ...] = ()) -> tuple[str, dict]:
        name = image.split(":")[0].replace("/", "-")
        tag = session_tag(f"{name}:micro")
        trace_file, report = tmp_path / f"{name}.trace.json", tmp_path / f"{name}.report.json"
        runner = CliRunner()
        traced = runner.invoke(
            cli, ["trace", image, "-o", str(trace_file), "--quiet-app", *trace_args]
        )
        assert traced.exit_code == 0, traced.output
        built = runner.invoke(
            cli,
            [
                "build",
                image,
                "-t",
                tag,
                "--trace",
                str(trace_file),
                "--report",
                str(report),
                *build_args,
            ],
        )
        assert built.exit_code == 0, built.output
        tags.append(tag)
        assert_valid("report", report.read_text())
        return tag, json.loads(report.read_text())

    yield make
    for tag in tags:
        engine.remove_image(tag)


def image_members(engine: Engine, image: str, path: str, run_id: str) -> dict[str, tarfile.TarInfo]:
    """The files of an image under path, as the engine archives them."""
    with engine.container(image, run_id, command=["none"], entrypoint=["none"]) as container:
        data = engine.archive(container, path)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_nginx_micro_answers_like_the_fat_image(
    engine: Engine, fat_nginx: str, micro, run_id: str
) -> None:
    tag, report = micro(fat_nginx, "--http-probe", "/missing")
    assert report["sizes"]["micro"] <= 13.5 * MIB
    # nginx reads its local zone through /etc/localtime: no zone chosen by
    # input, so no zoneinfo set (slimmer/datasets.py)
    kept = {f["path"] for f in report["files"]}
    assert "/usr/share/zoneinfo/Etc/UTC" in kept and "/usr/share/zoneinfo/Asia/Tokyo" not in kept
    paths = ["/", "/missing"]
    fat = serve_and_get(engine, fat_nginx, 80, paths, run_id)
    slim = serve_and_get(engine, tag, 80, paths, run_id)
    assert fat == slim and fat[0][0] == 200 and fat[1][0] == 404
    logs = image_members(engine, tag, "/opt/nginx/logs", run_id)
    assert list(logs) == ["logs"] and logs["logs"].isdir()  # there, and empty
    everything = image_members(engine, tag, "/opt/nginx", run_id)
    assert not [n for n in everything if n.endswith((".log", ".pid")) or "_temp" in n]
    config = engine.image_attrs(tag)["Config"]
    assert config["StopSignal"] == "SIGQUIT" and "80/tcp" in config["ExposedPorts"]
    assert config["Cmd"] == ["/opt/nginx/sbin/nginx", "-g", "daemon off;"]
    assert config["Labels"]["io.slim.source.image"] == fat_nginx


def test_python_app_as_non_root(
    engine: Engine, fixture_image, micro, run_id: str, tmp_path: Path
) -> None:
    image = fixture_image("pyapp")
    tag, _ = micro(image)
    fat = serve_and_get(engine, image, 8000, ["/", "/nope"], run_id)
    slim = serve_and_get(engine, tag, 8000, ["/", "/nope"], run_id)
    assert [status for status, _ in slim] == [200, 404]
    assert slim[0] == fat[0]
    answer = json.loads(slim[0][1])
    assert answer["uid"] == 1500 and answer["ssl_ca_certs"]
    assert answer["local_time"].endswith("+02:00")
    fat_config, micro_config = (
        engine.image_attrs(image)["Config"],
        engine.image_attrs(tag)["Config"],
    )
    assert micro_config["User"] == "web"
    assert micro_config["Healthcheck"] == fat_config["Healthcheck"]
    # The HEALTHCHECK ran during the trace, so what it imports is there too.
    trace = tmp_path / "slim-fixture-pyapp.trace.json"
    verified = CliRunner().invoke(cli, ["verify", image, tag, "--trace", str(trace), "--all"])
    assert verified.exit_code == 0, verified.output
    health = [line for line in verified.output.splitlines() if line.startswith("HEALTHCHECK")]
    assert health and all(line.endswith("same") for line in health)
    assert any(" exit code " in line and " 0 " in line for line in health)


@pytest.mark.parametrize("name", ["shelljob", "cplugin"])
def test_batch_jobs_print_the_same(
    engine: Engine, fixture_image, micro, run_id: str, name: str
) -> None:
    image = fixture_image(name)
    tag, report = micro(image, "--until-exit")
    fat = engine.run_to_exit(image, None, run_id)
    slim = engine.run_to_exit(tag, None, run_id)
    assert fat[0] == 0 and fat[1], fat
    assert slim == fat, (slim, fat)
    if name == "cplugin":
        kept = {f["path"]: f["why"] for f in report["files"]}
        assert "traced" in kept["/opt/calc/plugins/libtriple.so"]
        assert "elf-closure" in kept["/opt/calc/lib/libcalc.so.1"]


def test_owners_modes_setuid_and_hard_links_survive(
    engine: Engine, fixture_image, micro, run_id: str
) -> None:
    image = fixture_image("perms")
    tag, report = micro(image, "--until-exit")
    fat = image_members(engine, image, "/srv", run_id)
    slim = image_members(engine, tag, "/srv", run_id)
    for name in ("srv/a", "srv/suidbox", "srv/spool"):
        assert (slim[name].mode, slim[name].uid, slim[name].gid) == (
            fat[name].mode,
            fat[name].uid,
            fat[name].gid,
        ), name
    assert stat.S_IMODE(slim["srv/suidbox"].mode) == 0o4755
    assert stat.S_IMODE(slim["srv/spool"].mode) == 0o1770
    assert slim["srv/b"].islnk() and slim["srv/b"].linkname == "srv/a"
    assert "srv/spool/job" not in slim  # made by the traced run
    assert any("setuid" in warning for warning in report["warnings"])


def test_context_is_deterministic_and_builds_with_the_docker_cli(
    engine: Engine, fixture_image, tmp_path: Path
) -> None:
    image = fixture_image("perms")
    trace = tmp_path / "t.json"
    runner = CliRunner()
    assert runner.invoke(cli, ["trace", image, "-o", str(trace), "--until-exit"]).exit_code == 0
    first, second = tmp_path / "one.tar", tmp_path / "two.tar"
    for out in (first, second):
        result = runner.invoke(
            cli, ["build", image, "--trace", str(trace), "--context-only", str(out)]
        )
        assert result.exit_code == 0, result.output
    assert first.read_bytes() == second.read_bytes()
    tag = session_tag("cli-context:latest")
    try:
        with first.open("rb") as context:
            built = subprocess.run(
                ["docker", "build", "-q", "-t", tag, "-"], stdin=context, capture_output=True
            )
        assert built.returncode == 0, built.stderr
        assert engine.image_exists(tag)
    finally:
        engine.remove_image(tag)


def test_explain_says_why(engine: Engine, fixture_image, micro, tmp_path: Path) -> None:
    image = fixture_image("perms")
    _, report = micro(image, "--until-exit")
    path = tmp_path / "r.json"
    path.write_text(json.dumps(report))
    runner = CliRunner()
    kept = runner.invoke(cli, ["explain", str(path), "/srv/a"])
    assert kept.exit_code == 0 and "the app opened it" in kept.output
    created = runner.invoke(cli, ["explain", str(path), "/srv/spool/job"])
    assert created.exit_code == ExitCode.FAILURE and "created by the app" in created.output
    absent = runner.invoke(cli, ["explain", str(path), "/etc/motd"])
    assert "not in the micro image" in absent.output and "--include /etc/motd" in absent.output


def test_trace_of_another_image_is_refused(engine: Engine, fixture_image, tmp_path: Path) -> None:
    trace = tmp_path / "t.json"
    runner = CliRunner()
    assert (
        runner.invoke(
            cli, ["trace", fixture_image("batch"), "-o", str(trace), "--until-exit"]
        ).exit_code
        == 0
    )
    other = fixture_image("perms")
    refused = runner.invoke(
        cli, ["build", other, "--trace", str(trace), "--context-only", str(tmp_path / "c")]
    )
    assert refused.exit_code == ExitCode.STALE_TRACE and "--force" in refused.output
    forced = runner.invoke(
        cli,
        ["build", other, "--trace", str(trace), "--context-only", str(tmp_path / "c"), "--force"],
    )
    assert forced.exit_code == 0, forced.output


def test_busybox_base_keeps_its_shell_beside_merged_usr_links(
    engine: Engine, fixture_image, micro, run_id: str
) -> None:
    image = fixture_image("shelljob")  # Debian: /bin -> usr/bin
    tag, report = micro(image, "--until-exit", build_args=("--base", "busybox"))
    assert engine.run_to_exit(tag, None, run_id) == engine.run_to_exit(image, None, run_id)
    status, out, _ = engine.run_to_exit(
        tag, ["-c", "busybox true && readlink /bin/bash"], run_id, entrypoint=["/bin/sh"]
    )
    assert (status, out) == (0, b"/usr/bin/bash\n")
    assert {
        "path": "/bin",
        "why": "the base image has a directory here; kept entries are linked into it",
    } in report["dropped"]


def test_build_without_a_trace_traces_first_then_reuses_it(
    engine: Engine, fixture_image, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)  # .slim/ goes here
    image, tag = fixture_image("batch"), session_tag("autotrace:micro")
    runner = CliRunner()
    try:
        first = runner.invoke(cli, ["build", image, "-t", tag, "--until-exit", "--quiet-app"])
        assert first.exit_code == 0, first.output
        trace = tmp_path / ".slim" / "slim-fixture-batch_latest.trace.json"
        assert trace.exists() and "files seen" in first.output
        assert (
            "smaller" in first.output
            and (tmp_path / ".slim" / f"{file_safe(tag)}.report.json").exists()
        )
        second = runner.invoke(cli, ["build", image, "-t", tag])
        assert second.exit_code == 0, second.output
        assert f"using the trace {Path('.slim') / trace.name}" in second.output
    finally:
        engine.remove_image(tag)


@pytest.mark.parametrize("created", ["1970-01-01T00:00:00Z", "0001-01-01T00:00:00Z", None])
def test_files_keep_their_mtimes_whatever_the_image_says_it_was_created(
    engine: Engine, image_from, tmp_path: Path, run_id: str, created: str | None
) -> None:
    """An image whose Created is 1970, year 1 or missing: the micro image's
    files keep the fat image's mtimes (an ETag or Last-Modified depends on
    them)."""
    base = image_from(
        {
            "Dockerfile": "FROM busybox:latest\n"
            "RUN mkdir /data && echo hello > /data/page && touch -d @1600000000 /data/page\n"
            'CMD ["cat", "/data/page"]\n'
        }
    )
    fat = f"slim-test-created-{uuid.uuid4().hex[:8]}:latest"

    def set_created(config: dict) -> None:
        if created is None:
            config.pop("created", None)
        else:
            config["created"] = created

    derive_image(engine, base, fat, set_created)
    micro = f"{fat.split(':')[0]}:micro"
    try:
        trace = tmp_path / "t.json"
        runner = CliRunner()
        assert runner.invoke(cli, ["trace", fat, "--until-exit", "-o", str(trace)]).exit_code == 0
        built = runner.invoke(cli, ["build", fat, "-t", micro, "--trace", str(trace)])
        assert built.exit_code == 0, built.output
        for image in (fat, micro):
            page = image_members(engine, image, "/data/page", run_id)["page"]
            assert page.mtime == 1600000000, image
    finally:
        engine.remove_image(micro)
        engine.remove_image(fat)


def test_every_tag_is_applied(engine: Engine, fixture_image, tmp_path: Path) -> None:
    """`-t a -t b` names the image twice, as docker build does; a name the
    engine would refuse is refused before any container starts."""
    image = fixture_image("static")
    names = [f"slim-test-tags-{uuid.uuid4().hex[:8]}:{tag}" for tag in ("one", "two")]
    names.append(names[0].replace(":one", "-other:latest"))
    argv = ["build", image, "--until-exit", "--quiet-app", "--report", str(tmp_path / "r.json")]
    try:
        built = run_slim(*argv, *(arg for name in names for arg in ("-t", name)), cwd=tmp_path)
        assert built.exit_code == 0, built.describe()
        ids = {
            subprocess.run(
                ["docker", "image", "inspect", "-f", "{{.Id}}", name],
                capture_output=True, text=True, check=True,
            ).stdout.strip()
            for name in names
        }  # fmt: skip
        assert len(ids) == 1 and ids != {""}
        assert json.loads((tmp_path / "r.json").read_text())["tag"] == names[0]
    finally:
        for name in names:
            engine.remove_image(name)
    elsewhere = tmp_path / "bad"
    elsewhere.mkdir()
    bad = run_slim("build", image, "-t", names[0], "-t", "Bad Tag!!", cwd=elsewhere)
    assert bad.exit_code == ExitCode.USAGE, bad.describe()
    assert "'Bad Tag!!' is not a valid image name" in bad.stderr
    assert not (elsewhere / ".slim").exists()  # refused before it traced
