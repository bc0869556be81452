"""Podman only (make test-podman).

What an OCI runtime error looks like through slim: a second rootful
`podman system service` whose containers.conf asks for an open-files limit
above the kernel's fs.nr_open makes runc refuse every container start
("error setting rlimit type 7: operation not permitted"), as a host that
refuses Podman's default limits does. slim says the runtime refused (exit
7, a limit of the host), not that the engine is unreachable (exit 4).

And a config field Podman does not report: the SHELL of an image built by
Docker (Podman's inspect has none, and Docker's history entry is not JSON).
slim says so, in the trace and the report."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from slimmer.engine import Engine
from slimmer.errors import ExitCode
from tests.conftest import session_tag
from tests.helpers.images import derive_image
from tests.helpers.slimrun import run_slim

pytestmark = pytest.mark.podman


def answers(socket: Path) -> bool:
    return (
        subprocess.run(
            ["curl", "-fsS", "--max-time", "2", "--unix-socket", str(socket), "http://d/_ping"],
            capture_output=True,
        ).returncode
        == 0
    )


@pytest.fixture(scope="module")
def refusing_podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("podman") is None or os.geteuid() != 0:
        pytest.fail("the Podman lane needs root and podman (bash scripts/podman.sh)", pytrace=False)
    work = tmp_path_factory.mktemp("refusing-podman")
    nofile = int(Path("/proc/sys/fs/nr_open").read_text()) + 1
    conf = work / "containers.conf"
    conf.write_text(f'[containers]\ndefault_ulimits = ["nofile={nofile}:{nofile}"]\n')
    socket = work / "podman.sock"
    with (work / "service.log").open("wb") as log:
        service = subprocess.Popen(
            ["podman", "system", "service", "--time=0", f"unix://{socket}"],
            env={**os.environ, "CONTAINERS_CONF": str(conf)},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while not answers(socket):
            if service.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"podman service did not start: {(work / 'service.log').read_text()}")
            time.sleep(0.2)
        yield f"unix://{socket}"
    finally:
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(timeout=30)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()


def test_a_runtime_refusal_is_not_an_unreachable_engine(
    refusing_podman: str, tmp_path: Path
) -> None:
    ran = run_slim(
        "trace",
        "busybox:latest",
        "--until-exit",
        "-o",
        str(tmp_path / "t.json"),
        "--",
        "true",
        env={"DOCKER_HOST": refusing_podman},
    )
    assert ran.exit_code == ExitCode.RESOURCE, ran.describe()
    assert "not reachable" not in ran.output, ran.describe()
    assert "Traceback" not in ran.output, ran.describe()
    assert "runtime" in ran.output.lower(), ran.describe()
    assert "rlimit" in ran.output, ran.describe()  # the runtime's own reason is shown


def test_the_refusing_service_is_reachable(refusing_podman: str) -> None:
    """The service answers (so the failure above is the runtime's, not a
    dead socket)."""
    assert answers(Path(refusing_podman.removeprefix("unix://")))


DOCKER_SHELL_HISTORY = "/bin/sh -c #(nop)  SHELL [/bin/ash -c]"  # as Docker's builder writes it


def test_a_shell_podman_does_not_report_is_said(
    engine: Engine, fixture_image: Callable[[str], str], tmp_path: Path
) -> None:
    """The fixture as Docker would have built it: Shell in its config, the
    history entry in Docker's words. Podman reports neither; slim says so."""

    def as_docker_built(config: dict[str, Any]) -> None:
        config["config"]["Shell"] = ["/bin/ash", "-c"]
        for entry in config.get("history") or []:
            if "SHELL" in entry.get("created_by", ""):
                entry["created_by"] = DOCKER_SHELL_HISTORY

    tag = derive_image(
        engine,
        fixture_image("healthuser"),
        session_tag("podman-dockershell:latest"),
        as_docker_built,
    )
    try:
        trace, report = tmp_path / "t.json", tmp_path / "r.json"
        traced = run_slim("trace", tag, "-o", str(trace), "--quiet-app")
        assert traced.exit_code == 0, traced.describe()
        assert "does not report the SHELL" in traced.stderr, traced.describe()
        config = json.loads(trace.read_text())["config"]
        assert config["shell"] is None and config["unreported"] == ["shell"]
        assert config["healthcheck"]["test"][0] == "CMD-SHELL"  # read from Podman's own API
        built = run_slim(
            "build", tag, "--trace", str(trace), "--context-only", str(tmp_path / "c.tar"),
            "--report", str(report),
        )  # fmt: skip
        assert built.exit_code == 0, built.describe()
        warnings = json.loads(report.read_text())["warnings"]
        assert any("SHELL" in warning for warning in warnings), warnings
    finally:
        engine.remove_image(tag)
