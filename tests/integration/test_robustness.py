"""Faults and odd input on a real engine: one-line errors, nothing left
behind, odd names intact, builds that do not disturb each other."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from slimmer.cli import cli
from slimmer.engine import Engine
from slimmer.errors import ExitCode
from slimmer.trace import Trace, TraceStatus
from tests.conftest import session_tag


def test_app_that_never_becomes_ready(engine: Engine, fat_nginx: str, tmp_path: Path) -> None:
    out = tmp_path / "t.json"
    result = CliRunner().invoke(
        cli,
        [
            "trace",
            fat_nginx,
            "-o",
            str(out),
            "--ready-timeout",
            "2",
            "--",
            "sh",
            "-c",
            "echo still warming up; sleep 600",
        ],
    )
    assert result.exit_code == ExitCode.APP, result.output
    assert "nothing answered HTTP on port 80 within 2s" in result.output
    assert "still warming up" in result.output  # the app's own output
    saved = Trace.load(out)
    assert saved.status is TraceStatus.FAILED and "within 2s" in saved.problems[0]
    build = CliRunner().invoke(cli, ["build", fat_nginx, "--trace", str(out), "-t", "x:never"])
    assert build.exit_code == ExitCode.STALE_TRACE, build.output
    assert f"the trace of {fat_nginx} is failed" in build.output and "--force" in build.output


def test_odd_names_survive_trace_report_context_and_image(
    engine: Engine, fixture_image, tmp_path: Path
) -> None:
    image = fixture_image("oddnames")
    trace, report = tmp_path / "t.json", tmp_path / "r.json"
    runner = CliRunner()
    assert runner.invoke(cli, ["trace", image, "-o", str(trace), "--until-exit"]).exit_code == 0
    names = {os.fsencode(f.path) for f in Trace.load(trace).files}
    odd = {b"/data/with space", b"/data/new\nline", b"/data/caf\xe9"}
    assert odd <= names
    tag = session_tag("oddnames:micro")
    try:
        built = runner.invoke(
            cli, ["build", image, "-t", tag, "--trace", str(trace), "--report", str(report)]
        )
        assert built.exit_code == 0, built.output
        reported = {f["path"] for f in json.loads(report.read_text())["files"]}
        assert {"/data/caf\\xe9", "/data/new\nline", "/data/with space"} <= reported
        with engine.container(tag, engine.new_run_id(), command=["x"]) as container:
            data = engine.archive(container, "/data")
        with tarfile.open(
            fileobj=io.BytesIO(data), encoding="utf-8", errors="surrogateescape"
        ) as tar:
            in_image = {os.fsencode("/" + m.name) for m in tar.getmembers()}
        assert odd <= in_image
        assert (
            engine.run_to_exit(tag, None, engine.new_run_id())[1]
            == engine.run_to_exit(image, None, engine.new_run_id())[1]
        )
    finally:
        engine.remove_image(tag)


def test_full_disk_while_writing_the_context(
    engine: Engine, fixture_image, tmp_path: Path, tiny_disk: Path
) -> None:
    image = fixture_image("perms")  # its context holds a 2 MB busybox
    trace = tmp_path / "t.json"
    runner = CliRunner()
    assert runner.invoke(cli, ["trace", image, "-o", str(trace), "--until-exit"]).exit_code == 0
    target = tiny_disk / "context.tar"
    result = runner.invoke(
        cli, ["build", image, "--trace", str(trace), "--context-only", str(target)]
    )
    assert result.exit_code == ExitCode.RESOURCE
    assert "No space left on device" in result.output and "slim: hint:" in result.output
    assert not target.exists()  # nothing half-written is left


def test_two_builds_at_once_do_not_interfere(engine: Engine, fixture_image, tmp_path: Path) -> None:
    jobs = []
    for name in ("batch", "perms"):
        image = fixture_image(name)
        trace = tmp_path / f"{name}.json"
        assert (
            CliRunner().invoke(cli, ["trace", image, "-o", str(trace), "--until-exit"]).exit_code
            == 0
        )
        tag = session_tag(f"concurrent-{name}:micro")
        command = [
            sys.executable,
            "-m",
            "slimmer",
            "build",
            image,
            "-t",
            tag,
            "--trace",
            str(trace),
            "--report",
            str(tmp_path / f"{name}.report.json"),
        ]
        jobs.append((image, tag, subprocess.Popen(command, stderr=subprocess.PIPE, text=True)))
    try:
        for _, _, process in jobs:
            _, err = process.communicate(timeout=300)
            assert process.returncode == 0, err
        for image, tag, _ in jobs:
            assert engine.run_to_exit(tag, None, engine.new_run_id()) == engine.run_to_exit(
                image, None, engine.new_run_id()
            )
    finally:
        for _, tag, _ in jobs:
            engine.remove_image(tag)


@pytest.mark.parametrize(
    ("command", "phase"), [("build", "collecting files"), ("verify", "running")]
)
def test_ctrl_c_in_build_and_verify_leaves_nothing(
    engine: Engine, fat_nginx: str, tmp_path: Path, command: str, phase: str
) -> None:
    trace = tmp_path / "t.json"
    assert (
        CliRunner().invoke(cli, ["trace", fat_nginx, "-o", str(trace), "--quiet-app"]).exit_code
        == 0
    )
    argv = {
        "build": [
            "build",
            fat_nginx,
            "--trace",
            str(trace),
            "--context-only",
            str(tmp_path / "c.tar"),
        ],
        "verify": ["verify", fat_nginx, fat_nginx, "--trace", str(trace)],
    }[command]
    process = subprocess.Popen(
        [sys.executable, "-m", "slimmer", *argv],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stderr is not None
    for line in process.stderr:
        if phase in line:
            break
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) in (ExitCode.INTERRUPTED, 0)
    # the no_leftovers fixture fails the test if a container is still there


def test_unknown_base_image_is_not_found(engine: Engine, fixture_image, tmp_path: Path) -> None:
    image = fixture_image("batch")
    trace = tmp_path / "t.json"
    runner = CliRunner()
    assert runner.invoke(cli, ["trace", image, "-o", str(trace), "--until-exit"]).exit_code == 0
    result = runner.invoke(
        cli, ["build", image, "--trace", str(trace), "--base", "slim-no-such-base:1", "-t", "x:y"]
    )
    assert result.exit_code == ExitCode.NOT_FOUND
    assert "slim-no-such-base:1" in result.output and "slim: hint:" in result.output


def _slim_process(*args: str, tmpdir: Path | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    return subprocess.Popen(
        [sys.executable, "-m", "slimmer", *args], stderr=subprocess.PIPE, text=True, env=env
    )


def _wait_for(process: subprocess.Popen[str], text: str) -> None:
    assert process.stderr is not None
    for line in process.stderr:
        if text in line:
            return
    pytest.fail(f"slim ended before saying {text!r}")


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_clean_up_like_ctrl_c(
    engine: Engine, fixture_image, tmp_path: Path, number: int
) -> None:
    """A real slim process tracing an app that never ends gets the signal:
    it removes its container (the no_leftovers fixture checks) and exits
    with 128 + the signal, at once."""
    image = fixture_image("batch")
    process = _slim_process(
        "trace", image, "--until-exit", "-o", str(tmp_path / "t.json"), "--", "sleep", "600"
    )
    _wait_for(process, "waiting for sleep to exit")
    sent = time.monotonic()
    process.send_signal(number)
    assert process.wait(timeout=60) == 128 + number
    assert time.monotonic() - sent < 20
    assert not (tmp_path / "t.json").exists()


@pytest.fixture
def big_image(image_from) -> str:
    """An image with 200 MB that does not compress, so that its archive
    takes a moment to stream."""
    return image_from(
        {
            "Dockerfile": "FROM busybox:latest\n"
            "RUN head -c 200000000 /dev/urandom > /big\n"
            'CMD ["cat", "/etc/passwd"]\n'
        }
    )


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_while_the_archive_streams(
    engine: Engine, big_image: str, tmp_path: Path, presses: int
) -> None:
    """Ctrl-C (once, or twice in a row) while the collected files stream out
    of the container: slim stops at once (not after the engine's 120 s
    time-out) and leaves nothing in TMPDIR or on the engine."""
    trace = tmp_path / "t.json"
    assert (
        CliRunner().invoke(cli, ["trace", big_image, "--until-exit", "-o", str(trace)]).exit_code
        == 0
    )
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    process = _slim_process(
        "build", big_image, "--trace", str(trace), "--include", "/big",
        "--context-only", str(tmp_path / "ctx.tar"), tmpdir=scratch,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not any(p.stat().st_size > 5_000_000 for p in scratch.glob("*/rootfs.tar")):
        assert process.poll() is None, "the build ended before it was interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    sent = time.monotonic()
    for _ in range(presses):
        process.send_signal(signal.SIGINT)
        time.sleep(0.02)
    assert process.wait(timeout=60) == ExitCode.INTERRUPTED
    assert time.monotonic() - sent < 20
    assert list(scratch.iterdir()) == [] and not (tmp_path / "ctx.tar").exists()


# An app that names 23,000 long paths of bytes that are not UTF-8 (each
# byte becomes a 6-character escape in JSON): 550 MB of trace if all were
# kept. Each name is 16 components of 250 bytes, made unique by a counter.
MANY_LONG_NAMES_C = r"""
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

int main(void) {
    static char path[4096];
    struct stat st;
    for (int i = 0; i < 23000; i++) {
        char *at = path;
        for (int part = 0; part < 16; part++) {
            *at++ = '/';
            memset(at, 0xff, 250);
            at += 250;
        }
        at += sprintf(at, "/%d", i);
        *at = 0;
        stat(path, &st);
    }
    printf("named 23000 long paths\n");
    return 0;
}
"""


def test_a_flood_of_long_names_makes_a_partial_trace_in_bounded_memory(
    engine: Engine, static_program_image, tmp_path: Path
) -> None:
    """The sensor keeps the trace's paths within a budget in bytes; past it
    the trace is partial and says what it dropped. The run ends in time and
    slim's own memory stays bounded (measured on its process)."""
    image = static_program_image("names", MANY_LONG_NAMES_C)
    out, log = tmp_path / "t.json", tmp_path / "slim.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "slimmer", "trace", image, "--until-exit", "-o", str(out)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        fired = threading.Event()

        def interrupt() -> None:
            fired.set()
            process.send_signal(signal.SIGINT)

        stop = threading.Timer(150, interrupt)
        stop.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)  # its own peak memory too
        finally:
            stop.cancel()
        process.returncode = os.waitstatus_to_exitcode(status)
    said = log.read_text(errors="replace")[-3000:]
    assert not fired.is_set(), f"slim trace did not end in 150 s:\n{said}"
    assert process.returncode == 0, said
    trace = Trace.load(out)
    assert trace.status is TraceStatus.PARTIAL
    assert trace.syscalls is not None and trace.syscalls.dropped > 0
    assert any("lookups were not recorded" in problem for problem in trace.problems), said
    assert 1000 < len(trace.lookups) < 23000
    peak_mb = usage.ru_maxrss / 1024
    print(f"slim's peak memory: {peak_mb:.0f} MB")
    assert peak_mb < 600, said
