"""A signal while the engine creates a container leaves no container: real
slim processes, signalled at chosen moments of the create and of every
other request of their start (through a pipe to the real engine that holds
the request). The no_leftovers fixture fails a test that leaves one."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slimmer.engine import Engine
from slimmer.errors import ExitCode
from tests.helpers.slimrun import slim_env
from tests.helpers.slowengine import HeldRequest, Moment, creating_container, nth_request

SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
# `slim trace` talks to the engine this many times before its app runs: the
# engine's version, the image, create, inspect, two copies in, start, inspect.
START_REQUESTS = 8


def _exit_code_of(number: int) -> int:
    return int(ExitCode.INTERRUPTED) if number == signal.SIGINT else 128 + number


def _trace_argv(image: str, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "slimmer", "trace", image, "--until-exit", "-o", str(out),
        "--", "sleep", "600",
    ]  # fmt: skip


@pytest.mark.parametrize("moment", list(Moment), ids=lambda m: m.name.lower())
@pytest.mark.parametrize("number", SIGNALS, ids=lambda n: signal.Signals(n).name)
def test_a_signal_during_the_create_leaves_no_container(
    engine: Engine, fixture_image, tmp_path: Path, moment: Moment, number: int
) -> None:
    """The signal comes while the create request is on its way to the
    engine (slim gave up on it; the engine creates it anyway, as it does
    for a client that went away), or once the engine has answered but
    before slim has the answer."""
    image = fixture_image("batch")
    started: list[subprocess.Popen[str]] = []

    def signal_slim() -> None:
        started[0].send_signal(number)
        time.sleep(1.5)  # whatever slim does on the signal, it does now

    with HeldRequest(tmp_path, creating_container, moment, signal_slim) as held:
        process = subprocess.Popen(
            _trace_argv(image, tmp_path / "t.json"),
            env=slim_env({"DOCKER_HOST": held.url, "DOCKER_CONTEXT": None}),
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        _, err = process.communicate(timeout=120)
        assert held.hooked.wait(30), err
        assert held.answered.wait(60), "the engine never answered the create"
    assert process.returncode == _exit_code_of(number), err
    assert "Traceback" not in err
    assert not (tmp_path / "t.json").exists()


def test_signals_at_every_request_of_the_start_leave_nothing(
    engine: Engine, fixture_image, tmp_path: Path
) -> None:
    """Real slim processes, each signalled at another point of its talk with
    the engine until the app runs (the image's inspect, the create and its
    inspect, the copies of the sensor into the container, the start), each
    point before the engine has the request and after it answered."""
    image = fixture_image("batch")
    points = [(n, moment) for n in range(1, START_REQUESTS + 1) for moment in Moment]
    for index, (number, moment) in enumerate(points):
        chosen = SIGNALS[index % len(SIGNALS)]
        started: list[subprocess.Popen[str]] = []

        def signal_slim(
            chosen: int = chosen, started: list[subprocess.Popen[str]] = started
        ) -> None:
            started[0].send_signal(chosen)
            time.sleep(0.3)

        directory = tmp_path / f"run{index}"
        directory.mkdir()
        with HeldRequest(directory, nth_request(number), moment, signal_slim) as held:
            process = subprocess.Popen(
                _trace_argv(image, directory / "t.json"),
                env=slim_env({"DOCKER_HOST": held.url, "DOCKER_CONTEXT": None}),
                stderr=subprocess.PIPE,
                text=True,
            )
            started.append(process)
            _, err = process.communicate(timeout=120)
            assert held.hooked.wait(30), f"request {number}: {err}"
            held.answered.wait(30)
        where = f"request {number}, {moment.value}: {err}"
        assert process.returncode == _exit_code_of(chosen), where
        assert "Traceback" not in err, where
