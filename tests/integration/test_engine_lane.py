"""trace, build and verify of one web server with a HEALTHCHECK through a
SHELL and a non-root USER (fixtures/healthuser), on whatever engine
DOCKER_HOST names: Docker in `make test`, Podman rootful and rootless in
`make test-podman` (the marker `engine_lane` selects these tests there).

Podman's compat image inspect (4.3) has no Config.Healthcheck and no
Config.Shell: slim reads the HEALTHCHECK from Podman's own API and the
SHELL from the image's history, so the same tests hold on every engine."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from slimmer.engine import Engine
from tests.conftest import session_tag
from tests.helpers.engines import EngineKind, engine_kind
from tests.helpers.slimrun import SlimRun, dockerfile_of_context, run_slim

pytestmark = pytest.mark.engine_lane

MICRO = session_tag("healthuser:micro")
HEALTH_TEST = ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:8080/health.txt"]


@dataclass(frozen=True)
class LaneRun:
    """One trace, one build, one verify of the fixture, and what they wrote."""

    kind: EngineKind
    trace: dict[str, Any]
    dockerfile: str
    report: dict[str, Any]
    traced: SlimRun
    built: SlimRun
    verified: SlimRun


@pytest.fixture(scope="module")
def lane_run(
    engine: Engine, fixture_image: Callable[[str], str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LaneRun]:
    image = fixture_image("healthuser")
    work = tmp_path_factory.mktemp("lane")
    trace_file, report, context = work / "h.trace.json", work / "h.report.json", work / "h.tar"
    traced = run_slim("trace", image, "-o", str(trace_file), "--quiet-app")
    assert traced.exit_code == 0, traced.describe()
    contexted = run_slim("build", image, "--trace", str(trace_file), "--context-only", str(context))
    assert contexted.exit_code == 0, contexted.describe()
    built = run_slim(
        "build", image, "-t", MICRO, "--trace", str(trace_file), "--report", str(report)
    )
    assert built.exit_code == 0, built.describe()
    try:
        verified = run_slim("verify", image, MICRO, "--trace", str(trace_file), "--all")
        yield LaneRun(
            kind=engine_kind(),
            trace=json.loads(trace_file.read_text()),
            dockerfile=dockerfile_of_context(context),
            report=json.loads(report.read_text()),
            traced=traced,
            built=built,
            verified=verified,
        )
    finally:
        engine.remove_image(MICRO)


def test_trace_runs_the_app_as_the_image_user(lane_run: LaneRun) -> None:
    assert lane_run.trace["config"]["user"] == "web"
    assert lane_run.trace["config"]["exposed_ports"] == ["8080/tcp"]
    http = [probe for probe in lane_run.trace["probes"] if probe["probe"]["kind"] == "http"]
    assert [probe["answer"]["status"] for probe in http] == [200]


def test_trace_reads_the_healthcheck_and_runs_it(lane_run: LaneRun) -> None:
    assert (lane_run.trace["config"]["healthcheck"] or {}).get("test") == HEALTH_TEST
    health = [p for p in lane_run.trace["probes"] if p["probe"]["kind"] == "healthcheck"]
    assert health and health[0]["ok"], lane_run.trace["probes"]


def test_trace_reads_the_shell(lane_run: LaneRun) -> None:
    assert lane_run.trace["config"]["shell"] == ["/bin/ash", "-c"]
    assert lane_run.trace["config"]["unreported"] == []


def test_micro_image_keeps_user_port_and_command(lane_run: LaneRun) -> None:
    lines = lane_run.dockerfile.splitlines()
    # The image has no ENTRYPOINT: null (Podman's compat inspect says [] for none).
    assert lane_run.trace["config"]["entrypoint"] is None
    assert "USER web" in lines
    assert any(line.startswith("EXPOSE") and "8080/tcp" in line for line in lines)
    assert any(line.startswith("CMD") and "httpd" in line for line in lines)
    owners = {f["path"]: f["uid"] for f in lane_run.report["files"]}
    assert owners.get("/srv/www/index.html") == 7001


def test_micro_image_keeps_the_healthcheck(lane_run: LaneRun) -> None:
    health = [line for line in lane_run.dockerfile.splitlines() if line.startswith("HEALTHCHECK")]
    assert len(health) == 1 and "wget -q -O /dev/null" in health[0], lane_run.dockerfile
    assert "--interval=" in health[0] and "--retries=3" in health[0]
    kept = {f["path"] for f in lane_run.report["files"]}
    assert "/bin/ash" in kept  # the healthcheck's shell and its closure


def test_micro_image_keeps_the_shell(lane_run: LaneRun) -> None:
    assert 'SHELL ["/bin/ash", "-c"]' in lane_run.dockerfile.splitlines(), lane_run.dockerfile


def test_verify_answers_alike(lane_run: LaneRun) -> None:
    assert lane_run.verified.exit_code == 0, lane_run.verified.describe()
    assert "answers like" in lane_run.verified.output


def test_verify_compares_the_healthcheck(lane_run: LaneRun) -> None:
    lines = lane_run.verified.stdout.splitlines()
    health = [line for line in lines if line.startswith("HEALTHCHECK")]
    assert health and all(line.endswith("same") for line in health), lane_run.verified.describe()
