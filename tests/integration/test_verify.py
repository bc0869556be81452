"""slim verify and slim compare: proof of behaviour and size gates as exit
codes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from slimmer.cli import cli
from slimmer.engine import Engine
from slimmer.errors import ExitCode
from tests.conftest import session_tag
from tests.helpers.schemas import assert_valid
from tests.helpers.slimrun import run_slim

GOOD, BROKEN = session_tag("verify:good"), session_tag("verify:broken")
NO_CONFIG = session_tag("verify:no-config")  # a micro nginx that exits at start


@pytest.fixture(scope="module")
def nginx_pair(engine: Engine, fat_nginx: str, tmp_path_factory) -> Iterator[tuple[Path, str, str]]:
    """A correct micro nginx, and one built without its index page."""
    work = tmp_path_factory.mktemp("verify")
    trace = work / "nginx.trace.json"
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "trace",
            fat_nginx,
            "-o",
            str(trace),
            "--http-probe",
            "/",
            "--http-probe",
            "/missing",
            "--quiet-app",
        ],
    )
    assert result.exit_code == 0, result.output
    for tag, extra in (
        (GOOD, []),
        (BROKEN, ["--exclude", "/opt/nginx/html/index.html"]),
        (NO_CONFIG, ["--exclude", "/opt/nginx/conf/nginx.conf"]),
    ):
        built = runner.invoke(
            cli,
            [
                "build",
                fat_nginx,
                "-t",
                tag,
                "--trace",
                str(trace),
                "--report",
                str(work / "r.json"),
                *extra,
            ],
        )
        assert built.exit_code == 0, built.output
    yield trace, GOOD, BROKEN
    for tag in (GOOD, BROKEN, NO_CONFIG):
        engine.remove_image(tag)


def test_verify_passes_on_a_correct_pair(engine: Engine, fat_nginx: str, nginx_pair) -> None:
    trace, good, _ = nginx_pair
    result = CliRunner().invoke(cli, ["verify", fat_nginx, good, "--trace", str(trace)])
    assert result.exit_code == 0, result.output
    assert "answers like" in result.output
    as_json = CliRunner().invoke(
        cli, ["verify", fat_nginx, good, "--trace", str(trace), "--format", "json"]
    )
    assert as_json.exit_code == 0, as_json.output
    assert_valid("verify", as_json.stdout)
    outcome = json.loads(as_json.stdout)
    assert outcome["same"] is True and (outcome["fat"], outcome["micro"]) == (fat_nginx, good)
    assert {c["probe"] for c in outcome["checks"]} == {"GET / :80", "GET /missing :80", "app"}
    assert outcome["fat_id"] == engine.image_attrs(fat_nginx)["Id"]
    assert outcome["micro_id"] == engine.image_attrs(good)["Id"]
    assert outcome["micro_digests"] == []  # built here, never pushed
    markdown = CliRunner().invoke(
        cli, ["verify", fat_nginx, good, "--trace", str(trace), "--format", "markdown", "--all"]
    )
    assert markdown.exit_code == 0, markdown.output
    lines = markdown.stdout.splitlines()
    assert f"| probe | aspect | {fat_nginx} | {good} | |" in lines
    assert "| GET / :80 | status | 200 | 200 | same |" in lines
    assert lines[-1].startswith("verify passed: ")


def test_verify_fails_with_a_readable_diff(fat_nginx: str, nginx_pair) -> None:
    trace, _, broken = nginx_pair
    as_json = CliRunner().invoke(
        cli, ["verify", fat_nginx, broken, "--trace", str(trace), "--format", "json"]
    )
    assert as_json.exit_code == ExitCode.FAILURE
    assert_valid("verify", as_json.stdout)
    assert json.loads(as_json.stdout)["same"] is False
    result = CliRunner().invoke(cli, ["verify", fat_nginx, broken, "--trace", str(trace)])
    assert result.exit_code == ExitCode.FAILURE
    lines = result.output.splitlines()
    status = next(line for line in lines if line.startswith("GET / :80") and " status " in line)
    assert "200" in status and status.endswith("DIFFERS")
    assert any(line.startswith("GET / :80") and " body " in line for line in lines)
    assert not any(line.startswith("GET /missing") for line in lines)  # only differences shown
    assert "checks differ" in result.output
    failed = [line for line in result.stderr.splitlines() if line.startswith("slim: check failed")]
    assert f"slim: check failed: GET / :80 status: {fat_nginx} 200, {broken} 403" in failed
    assert len(failed) == sum(1 for line in lines if line.endswith("DIFFERS"))
    markdown = CliRunner().invoke(
        cli, ["verify", fat_nginx, broken, "--trace", str(trace), "--format", "markdown"]
    )
    assert markdown.exit_code == ExitCode.FAILURE
    assert "| GET / :80 | status | 200 | 403 | **differs** |" in markdown.stdout.splitlines()
    assert "**verify failed:**" in markdown.stdout


def test_a_micro_app_that_exits_at_start_fails_verify_with_its_last_words(
    fat_nginx: str, nginx_pair, tmp_path: Path
) -> None:
    """The most common broken micro image: its app exits at start. verify
    says so, with the app's last output, and exits 1 (not "the engine is not
    reachable")."""
    trace, _, _ = nginx_pair
    result = run_slim("verify", fat_nginx, NO_CONFIG, "--trace", str(trace))
    assert result.exit_code == ExitCode.FAILURE, result.describe()
    assert f"slim: {NO_CONFIG}: the app exited with status 1; its last output:" in result.stderr
    assert 'open() "/opt/nginx/conf/nginx.conf" failed' in result.stderr
    assert "app running after the probes: " in result.stderr
    assert "checks differ" in result.stderr


def test_verify_with_no_options_probes_as_trace_does(
    fat_nginx: str, nginx_pair, tmp_path: Path
) -> None:
    """No trace in .slim/ and no probe given: GET / on each exposed port (and
    the HEALTHCHECK), as a trace would; a micro image without its page
    fails."""
    good = run_slim("verify", fat_nginx, GOOD, "--all", cwd=tmp_path)
    assert good.exit_code == 0, good.describe()
    assert "GET / :80" in good.stdout and "answers like" in good.stderr
    broken = run_slim("verify", fat_nginx, BROKEN, cwd=tmp_path)
    assert broken.exit_code == ExitCode.FAILURE, broken.describe()
    assert not (tmp_path / ".slim").exists()


def test_a_probe_the_fat_image_fails_is_an_error_not_a_match(
    fat_nginx: str, nginx_pair, tmp_path: Path
) -> None:
    """Two failures prove nothing: a probe that does not succeed on the fat
    image is exit 6, naming the probe; one expected to fail (!) is compared."""
    _, good, _ = nginx_pair
    check = "/opt/nginx/sbin/nginx -t -c /no/such.conf"  # fails alike in both images
    failing = run_slim("verify", fat_nginx, good, "--probe-exec", check)
    assert failing.exit_code == ExitCode.APP, failing.describe()
    assert f"probe exec {check} expected success, got exit 1" in failing.stderr
    assert '"/no/such.conf" failed' in failing.stderr  # the probe's own output
    expected = run_slim("verify", fat_nginx, good, "--probe-exec", f"!{check}", "--all")
    assert expected.exit_code == 0, expected.describe()
    assert f"!exec {check}  exit code" in expected.stdout


def test_verify_of_a_batch_job(engine: Engine, fixture_image, tmp_path: Path) -> None:
    image = fixture_image("shelljob")
    trace, report = tmp_path / "t.json", tmp_path / "r.json"
    runner = CliRunner()
    assert (
        runner.invoke(
            cli, ["trace", image, "-o", str(trace), "--until-exit", "--quiet-app"]
        ).exit_code
        == 0
    )
    tag = session_tag("verify-job:micro")
    try:
        built = runner.invoke(
            cli,
            ["build", image, "-t", tag, "--trace", str(trace), "--report", str(report), "--verify"],
        )
        assert built.exit_code == 0, built.output
        assert "answers like" in built.output
        assert json.loads(Path(trace).read_text())["until_exit"] is True
    finally:
        engine.remove_image(tag)


def test_compare_gates(fat_nginx: str, nginx_pair) -> None:
    _, good, _ = nginx_pair
    runner = CliRunner()
    passing = runner.invoke(
        cli, ["compare", fat_nginx, good, "--max-size", "20MB", "--min-ratio", "10"]
    )
    assert passing.exit_code == 0, passing.output
    assert fat_nginx in passing.output and good in passing.output
    too_big = runner.invoke(cli, ["compare", fat_nginx, good, "--max-size", "5MB", "--no-files"])
    assert too_big.exit_code == ExitCode.FAILURE and "over --max-size" in too_big.output
    ratio = runner.invoke(cli, ["compare", fat_nginx, good, "--min-ratio", "1000", "--no-files"])
    assert ratio.exit_code == ExitCode.FAILURE and "--min-ratio 1000" in ratio.output
    bad_size = runner.invoke(cli, ["compare", good, "--max-size", "lots"])
    assert bad_size.exit_code != 0 and "cannot read size" in bad_size.output


def test_compare_formats(fat_nginx: str, nginx_pair) -> None:
    _, good, _ = nginx_pair
    runner = CliRunner()
    as_json = runner.invoke(cli, ["compare", fat_nginx, good, "--format", "json"])
    assert_valid("compare", as_json.stdout)
    data = json.loads(as_json.stdout)
    fat, micro = data["images"]
    assert micro["size"] < fat["size"] and micro["ratio"] > 10
    # the app's files and the records of its OS packages, in layers by update risk
    assert micro["files"] < 100 < fat["files"] and micro["layers"] > 4
    assert 0 < micro["packages"] < 40 < fat["packages"]
    assert micro["id"].startswith("sha256:") and micro["digests"] == []
    markdown = runner.invoke(
        cli, ["compare", fat_nginx, good, "--format", "markdown", "--no-files"]
    )
    assert markdown.output.startswith("| image | size |") and "gates passed" in markdown.output
