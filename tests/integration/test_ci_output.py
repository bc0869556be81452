"""What slim shows a CI job and a person at a terminal: -q leaves errors
only; long steps (a tree of 60,000 directories to watch, 100 MB to collect,
copy and send) show a live bar on a terminal and no terminal codes in a log;
a micro image whose command cannot start is a verify failure that says so;
docker build's --label and --platform."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from slimmer.engine import Engine
from slimmer.errors import ExitCode
from tests.conftest import session_tag
from tests.helpers.slimrun import run_slim, slim_env

ESCAPE = "\x1b["


def run_in_terminal(*argv: str, timeout: float = 300) -> tuple[int, str]:
    """slim ARGV with stderr (and stdout) on a pseudo-terminal, as a person
    runs it; the exit status and everything it wrote."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "slimmer", *argv],
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        env=slim_env({}),
    )
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    data = os.read(leader, 65536)
                except OSError:  # EIO: the other end is closed
                    break
                if not data:
                    break
                chunks.append(data)
            elif process.poll() is not None:
                break
        status = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(leader)
        if process.poll() is None:
            process.kill()
            process.wait()
    return status, b"".join(chunks).decode("utf-8", "replace")


@pytest.fixture(scope="module")
def bigtree(fixture_image: Callable[[str], str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trace of the job of fixtures/bigtree (60,000 directories, reads 100 MB)."""
    trace = tmp_path_factory.mktemp("bigtree") / "t.json"
    ran = run_slim("trace", fixture_image("bigtree"), "--until-exit", "-o", str(trace))
    assert ran.exit_code == 0, ran.describe()
    return trace


def test_long_steps_show_a_live_bar_on_a_terminal(
    fixture_image: Callable[[str], str], tmp_path: Path
) -> None:
    image = fixture_image("bigtree")
    status, shown = run_in_terminal(
        "trace", image, "--until-exit", "--quiet-app", "-o", str(tmp_path / "t.json")
    )
    assert status == 0, shown
    assert "\r\x1b[K" in shown, shown  # one line, redrawn in place
    assert "watching: " in shown and " directories" in shown, shown
    assert "watching 6" in shown  # the final count, as a line of its own
    status, shown = run_in_terminal(
        "build", image, "--trace", str(tmp_path / "t.json"),
        "--context-only", str(tmp_path / "c.tar"), "--report", str(tmp_path / "r.json"),
    )  # fmt: skip
    (tmp_path / "c.tar").unlink(missing_ok=True)  # 100 MB pytest would keep
    assert status == 0, shown
    assert "copying the files out: " in shown and " of 10" in shown and "[#" in shown, shown


def test_a_log_gets_plain_lines(bigtree: Path, fixture_image: Callable[[str], str]) -> None:
    """Not a terminal: no bar, no terminal codes, nothing but lines."""
    image = fixture_image("bigtree")
    ran = run_slim("trace", image, "--until-exit", "-o", str(bigtree.parent / "again.json"))
    assert ran.exit_code == 0, ran.describe()
    assert ESCAPE not in ran.stderr and "\r" not in ran.stderr, ran.stderr
    assert "slim: watching 6" in ran.stderr


def test_quiet_prints_errors_only(bigtree: Path, fixture_image: Callable[[str], str]) -> None:
    image = fixture_image("bigtree")
    traced = run_slim("-q", "trace", image, "--until-exit", "-o", str(bigtree.parent / "q.json"))
    assert traced.exit_code == 0, traced.describe()
    assert traced.stderr == "" and traced.stdout == ""
    compared = run_slim("-q", "compare", image, "--no-files", "--format", "json")
    assert compared.exit_code == 0 and compared.stderr == ""
    assert json.loads(compared.stdout)["images"][0]["image"] == image
    gated = run_slim("-q", "compare", image, "--no-files", "--max-size", "1MB")
    assert gated.exit_code == ExitCode.FAILURE
    assert gated.stderr.splitlines() == [
        f"slim: gate failed: {image} is 102.0 MB, over --max-size 1.0 MB"
    ]


def test_a_micro_image_whose_command_cannot_start_fails_verify(
    image_from: Callable[[dict[str, str | bytes]], str],
) -> None:
    """The OCI runtime's refusal to exec a missing command is the micro
    image's answer, compared like any other (not "the engine is not reachable")."""
    command = 'CMD ["md5sum", "/bin/busybox"]\n'
    fat = image_from({"Dockerfile": "FROM busybox:latest\n" + command})
    micro = image_from({"Dockerfile": 'FROM busybox:latest\nRUN rm "$(which md5sum)"\n' + command})
    ran = run_slim("verify", fat, micro, "--until-exit")
    assert ran.exit_code == ExitCode.FAILURE, ran.describe()
    assert "the container's command cannot run" in ran.output, ran.describe()
    assert 'exec: "md5sum": executable file not found' in ran.output, ran.describe()
    assert "slim: check failed: run answer:" in ran.stderr


def test_labels_and_the_native_platform(
    engine: Engine, image_from: Callable[[dict[str, str | bytes]], str], tmp_path: Path
) -> None:
    fat = image_from({"Dockerfile": 'FROM busybox:latest\nLABEL kept=yes\nCMD ["true"]\n'})
    trace = tmp_path / "t.json"
    assert run_slim("trace", fat, "--until-exit", "-o", str(trace)).exit_code == 0
    tag = session_tag("labels:micro")
    refused = run_slim(
        "build", fat, "-t", tag, "--trace", str(trace), "--platform", "linux/s390x"
    )  # fmt: skip
    assert refused.exit_code == ExitCode.USAGE, refused.describe()
    assert f"the engine runs {engine.platform} images" in refused.stderr
    assert not engine.image_exists(tag)
    try:
        built = run_slim(
            "build", fat, "-t", tag, "--trace", str(trace), "--report", str(tmp_path / "r.json"),
            "--label", "org.example.team=slim", "--label", "kept=overridden",
            "--platform", engine.platform,
        )  # fmt: skip
        assert built.exit_code == 0, built.describe()
        labels = engine.image_attrs(tag)["Config"]["Labels"]
        assert labels["org.example.team"] == "slim" and labels["kept"] == "overridden"
        assert labels["io.slim.source.image"] == fat
    finally:
        engine.remove_image(tag)
