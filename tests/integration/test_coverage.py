"""Coverage: the micro image holds every path the app goes through, not
only what inotify saw opened. Each fixture is a general form of one way a
micro image used to build fine and then break; each micro image must behave
exactly like its fat image, checked with plain containers."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from slimmer.cli import cli
from slimmer.engine import Engine
from tests.helpers.serve import serve_and_get
from tests.integration.conftest import Micro


def run_both(engine: Engine, fat: str, micro: str, run_id: str) -> None:
    """The same exit code, stdout and stderr, byte for byte."""
    expected = engine.run_to_exit(fat, None, run_id)
    assert expected[0] == 0, expected
    assert engine.run_to_exit(micro, None, run_id) == expected


def test_a_lock_dir_reached_through_a_directory_link(
    engine: Engine, fixture_image, micro: Micro, run_id: str
) -> None:
    """The server takes its lock in /var/run/app; /var/run is a link to
    /run, which inotify never names."""
    image = fixture_image("lockserver")
    tag, report = micro(image)
    kept = {f["path"]: f for f in report["files"]}
    assert kept["/var/run"]["link"] == "/run"
    paths = ["/", "/index.html"]
    assert serve_and_get(engine, tag, 8080, paths, run_id) == serve_and_get(
        engine, image, 8080, paths, run_id
    )


def test_an_unprobed_sibling_page_of_the_docroot(
    engine: Engine, fixture_image, micro: Micro, run_id: str
) -> None:
    """The trace asked for / only; the docroot is the app's own (no package
    owns it), so its error page comes too and a missing page answers the
    same."""
    image = fixture_image("lockserver")
    tag, report = micro(image)
    kept = {f["path"]: f for f in report["files"]}
    assert kept["/srv/www/404.html"]["why"] == ["app-content"]
    assert report["sizes"]["only_for"]["app-content"] == len("<h1>not here, sorry</h1>\n")
    paths = ["/nothing-here", "/"]
    fat = serve_and_get(engine, image, 8080, paths, run_id)
    assert fat[0][0] == 404 and b"not here" in fat[0][1]
    assert serve_and_get(engine, tag, 8080, paths, run_id) == fat


def test_a_supervisor_through_a_linked_service_dir(
    engine: Engine, fixture_image, micro: Micro, run_id: str
) -> None:
    image = fixture_image("supervised")
    tag, report = micro(image)
    kept = {f["path"]: f for f in report["files"]}
    assert kept["/etc/service"]["link"] == "/etc/runit/runsvdir/default"
    assert kept["/etc/runit/runsvdir/default/web"]["link"] == "/etc/sv/web"
    assert serve_and_get(engine, tag, 8081, ["/"], run_id) == serve_and_get(
        engine, image, 8081, ["/"], run_id
    )


def test_an_interpreter_whose_search_path_is_a_versioned_link(
    engine: Engine, fixture_image, micro: Micro, run_id: str
) -> None:
    """perl finds its core modules through /usr/share/perl/5.36 (a link to
    5.36.0) and its x86_64 lib dir, the same way."""
    image = fixture_image("prodperl")
    tag, report = micro(image, "--until-exit")
    links = {f["path"]: f["link"] for f in report["files"] if f.get("link")}
    assert links.get("/usr/share/perl/5.36") == "5.36.0"
    run_both(engine, image, tag, run_id)


def test_a_config_the_app_replaced_during_the_trace(
    engine: Engine, fixture_image, micro: Micro, run_id: str
) -> None:
    """sed -i renames a new file over the image's; the micro image must
    hold the image's own version, not lack it."""
    image = fixture_image("editjob")
    tag, report = micro(image, "--until-exit")
    kept = {f["path"]: f for f in report["files"]}
    assert "app-changed" in kept["/etc/app.conf"]["why"]
    run_both(engine, image, tag, run_id)


def test_a_volume_with_content(engine: Engine, fixture_image, micro: Micro, run_id: str) -> None:
    image = fixture_image("volumedata")
    tag, report = micro(image, "--until-exit")
    kept = {f["path"] for f in report["files"]}
    assert {"/data/seed.txt", "/data/later.txt"} <= kept
    run_both(engine, image, tag, run_id)


def test_a_file_capability_survives(
    engine: Engine, fixture_image, micro: Micro, run_id: str
) -> None:
    """A non-root program gets cap_net_bind_service from its file at exec;
    without the capability on the file in the micro image it runs without."""
    image = fixture_image("filecaps")
    tag, _ = micro(image, "--until-exit")

    def effective(image: str) -> str:
        code, out, err = engine.run_to_exit(image, None, run_id)
        assert code == 0, err
        return next(line for line in out.decode().splitlines() if line.startswith("CapEff:"))

    fat = effective(image)
    assert fat.endswith("0000000000000400")  # 1 << CAP_NET_BIND_SERVICE
    assert effective(tag) == fat


def test_a_job_whose_output_depends_on_lookups_alone(
    engine: Engine, fixture_image, micro: Micro, run_id: str
) -> None:
    """ls -l, test -x, [ -e ], a search list of config locations, readlink:
    nothing is opened, so inotify sees nothing; the syscall layer sees the
    names. Without it (--no-syscalls) the micro image answers otherwise."""
    image = fixture_image("lookupjob")
    tag, report = micro(image, "--until-exit")
    kept = {f["path"]: f for f in report["files"]}
    for path in ("/opt/data/report.bin", "/opt/tools/helper", "/opt/job/job.conf"):
        assert "looked-up" in kept[path]["why"], path
    assert kept["/opt/current"]["link"] == "/opt/releases/v2"
    assert "/opt/data/optional.conf" not in kept
    run_both(engine, image, tag, run_id)
    blind, _ = micro(image, "--until-exit", "--no-syscalls")
    assert engine.run_to_exit(blind, None, run_id) != engine.run_to_exit(image, None, run_id)


def test_a_client_probe_exercises_the_app_and_is_not_kept(
    engine: Engine, fixture_image, micro: Micro, tmp_path: Path
) -> None:
    """--probe-client runs a client of the fat image in a container of its
    own that shares the app's network: the server's answer is recorded,
    the client's own files are not traced, and verify runs the same client
    (from the fat image) against the micro image."""
    image = fixture_image("lockserver")
    tag, report = micro(image, "--probe-client", "/usr/local/bin/ask-server")
    kept = {f["path"] for f in report["files"]}
    assert "/usr/local/bin/ask-server" not in kept
    trace = json.loads(next(tmp_path.glob("*.trace.json")).read_text())
    (client,) = [p for p in trace["probes"] if p["probe"]["kind"] == "client"]
    assert client["answer"]["exit_code"] == 0 and "home" in client["answer"]["stdout"]
    assert not [p for p in trace["probes"] if p["probe"]["kind"] == "http"]  # no default GET
    verified = CliRunner().invoke(
        cli, ["verify", image, tag, "--trace", str(next(tmp_path.glob("*.trace.json")))]
    )
    assert verified.exit_code == 0, verified.output
    assert (
        "client /usr/local/bin/ask-server"
        in CliRunner()
        .invoke(
            cli,
            ["verify", image, tag, "--trace", str(next(tmp_path.glob("*.trace.json"))), "--all"],
        )
        .output
    )
