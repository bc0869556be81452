"""Podman only (make test-podman): what an OCI runtime error looks like
through slim. A second rootful `podman system service` whose containers.conf
asks for an open-files limit above the kernel's fs.nr_open makes runc refuse
every container start ("error setting rlimit type 7: operation not
permitted"), as a host that refuses Podman's default limits does. slim must
say the runtime refused, not that the engine is unreachable (exit 4)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from slimmer.errors import ExitCode
from tests.helpers.slimrun import run_slim

pytestmark = pytest.mark.podman

RUNTIME_ERROR_FIX = (
    "slimmer/engine.py: an APIError 500 from a container start whose explanation names "
    "the OCI runtime ('OCI runtime', 'runc', 'crun', 'OCI permission denied') is a "
    "runtime refusal, not 'the engine is not reachable' (exit 4)"
)


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


@pytest.mark.xfail(reason=RUNTIME_ERROR_FIX, strict=True)
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
    assert ran.exit_code not in (ExitCode.OK, ExitCode.ENGINE), ran.describe()
    assert "not reachable" not in ran.output, ran.describe()
    assert "runtime" in ran.output.lower(), ran.describe()
    assert "rlimit" in ran.output, ran.describe()  # the runtime's own reason is shown


def test_the_refusing_service_is_reachable(refusing_podman: str) -> None:
    """The service answers (so the failure above is the runtime's, not a
    dead socket)."""
    assert answers(Path(refusing_podman.removeprefix("unix://")))
