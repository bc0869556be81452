"""--init uses the image's own tini only when it runs: an image whose tini
is truncated gets the wheel's dumb-init (and says why), or, where that
cannot run either, a clear refusal. Images built here, real slim
processes, the micro image checked with plain `docker run`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from slimmer.engine import Engine
from slimmer.errors import ExitCode
from slimmer.pid1 import WHEEL_INIT_PATH
from tests.helpers.elfroot import compile_program
from tests.helpers.slimrun import run_slim


@pytest.fixture
def truncated_tini(tmp_path: Path) -> bytes:
    """A static program (as tini-static is) cut after its headers: it passes
    a look at its ELF header, and the kernel cannot run it."""
    return compile_program(tmp_path, "int main(void) { return 0; }\n", "-static")[:1000]


@pytest.fixture
def micro_tag(micro_tags) -> str:
    return micro_tags()


def traced(image: str, tmp_path: Path) -> Path:
    path = tmp_path / "trace.json"
    result = run_slim("trace", image, "--until-exit", "--quiet-app", "-o", str(path))
    assert result.exit_code == 0, result.describe()
    return path


def test_a_truncated_tini_gives_way_to_the_wheels_dumb_init(
    engine: Engine, image_from, truncated_tini: bytes, micro_tag: str, tmp_path: Path
) -> None:
    image = image_from(
        {
            "tini": truncated_tini,
            "Dockerfile": "FROM debian:bookworm\nCOPY tini /usr/bin/tini\n"
            'CMD ["/usr/bin/dash", "-c", "echo up"]\n',
        }
    )
    report = tmp_path / "report.json"
    built = run_slim(
        "build", image, "--trace", str(traced(image, tmp_path)), "-t", micro_tag, "--init",
        "--report", str(report),
    )  # fmt: skip
    assert built.exit_code == 0, built.describe()
    assert "--init: /usr/bin/tini cannot run" in built.stderr and "truncated" in built.stderr
    init = json.loads(report.read_text())["init"]
    assert (init["source"], init["path"]) == ("dumb-init-wheel", WHEEL_INIT_PATH)
    assert init["passed_over"][0].startswith("/usr/bin/tini cannot run: ")
    ran = subprocess.run(["docker", "run", "--rm", micro_tag], capture_output=True, timeout=120)
    assert (ran.returncode, ran.stdout) == (0, b"up\n"), ran.stderr
    assert engine.image_attrs(micro_tag)["Config"]["Entrypoint"] == [WHEEL_INIT_PATH, "--"]


def test_a_truncated_tini_where_the_wheel_cannot_run_is_refused(
    image_from, truncated_tini: bytes, micro_tag: str, tmp_path: Path
) -> None:
    """busybox has no glibc loader for the wheel's dumb-init: the build is
    refused, naming the image's tini and why it cannot run."""
    image = image_from(
        {
            "tini": truncated_tini,
            "Dockerfile": 'FROM busybox:latest\nCOPY tini /sbin/tini\nCMD ["echo", "up"]\n',
        }
    )
    refused = run_slim(
        "build", image, "--trace", str(traced(image, tmp_path)), "-t", micro_tag, "--init",
    )  # fmt: skip
    assert refused.exit_code == ExitCode.NOT_FOUND, refused.describe()
    assert "/sbin/tini cannot run: not a program the kernel runs (truncated" in refused.stderr
    assert "Traceback" not in refused.stderr
