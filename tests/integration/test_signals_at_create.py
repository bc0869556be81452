"""A signal while the engine creates a container leaves no container: real
slim processes, signalled at chosen moments of the create and of every
other request of their start (through a pipe to the real engine that holds
the request). The no_leftovers fixture fails a test that leaves one."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
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


def signalled_trace(
    image: str,
    directory: Path,
    pick: Callable[[bytes, bytes, int], bool],
    moment: Moment,
    number: int,
    settle: float,
) -> tuple[int, str, HeldRequest]:
    """`slim trace` of `image` through a pipe to the engine that sends slim
    signal `number` at `moment` of the request `pick` takes, then waits
    `settle` seconds before the request goes on. Its exit status, stderr,
    and the pipe (once the engine answered the held request)."""
    started: list[subprocess.Popen[str]] = []

    def signal_slim() -> None:
        started[0].send_signal(number)
        time.sleep(settle)  # whatever slim does on the signal, it does now

    argv = [
        sys.executable, "-m", "slimmer", "trace", image, "--until-exit",
        "-o", str(directory / "t.json"), "--", "sleep", "600",
    ]  # fmt: skip
    with HeldRequest(directory, pick, moment, signal_slim) as held:
        process = subprocess.Popen(
            argv,
            env=slim_env({"DOCKER_HOST": held.url, "DOCKER_CONTEXT": None}),
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        _, err = process.communicate(timeout=120)
        assert held.hooked.wait(30), err
        held.answered.wait(60)
    assert not (directory / "t.json").exists()
    return process.returncode, err, held


@pytest.mark.parametrize("moment", list(Moment), ids=lambda m: m.name.lower())
@pytest.mark.parametrize("number", SIGNALS, ids=lambda n: signal.Signals(n).name)
def test_a_signal_during_the_create_leaves_no_container(
    engine: Engine, fixture_image, tmp_path: Path, moment: Moment, number: int
) -> None:
    """The signal comes while the create request is on its way to the
    engine (slim gave up on it; the engine creates it anyway, as it does
    for a client that went away), or once the engine has answered but
    before slim has the answer."""
    status, err, held = signalled_trace(
        fixture_image("batch"), tmp_path, creating_container, moment, number, settle=1.5
    )
    assert held.answered.is_set(), "the engine never answered the create"
    assert status == _exit_code_of(number), err
    assert "Traceback" not in err


def test_signals_at_every_request_of_the_start_leave_nothing(
    engine: Engine, fixture_image, tmp_path: Path
) -> None:
    """Real slim processes, each signalled at another point of its talk with
    the engine until the app runs (the image's inspect, the create and its
    inspect, the copies of the sensor into the container, the start), each
    point before the engine has the request and after it answered."""
    image = fixture_image("batch")
    points = [(n, moment) for n in range(1, START_REQUESTS + 1) for moment in Moment]
    for index, (request, moment) in enumerate(points):
        number = SIGNALS[index % len(SIGNALS)]
        directory = tmp_path / f"run{index}"
        directory.mkdir()
        status, err, _ = signalled_trace(
            image, directory, nth_request(request), moment, number, settle=0.3
        )
        where = f"request {request}, {moment.value}: {err}"
        assert status == _exit_code_of(number), where
        assert "Traceback" not in err, where
