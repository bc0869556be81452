"""Bad input on the command line: one line, a hint, the exit
status, and found before any container starts (the engine here is a socket
nobody listens on: reaching it would be exit 4, not what is asked)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slimmer.errors import ExitCode

NO_ENGINE = "unix:///nonexistent/slim-test.sock"


def slim(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCKER_HOST": NO_ENGINE}
    return subprocess.run(
        [sys.executable, "-m", "slimmer", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
    )


def assert_clear(result: subprocess.CompletedProcess[str], code: ExitCode, says: str) -> None:
    assert result.returncode == code, result.stderr
    assert says in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["build", "img", "-t", "x:y", "--platform", "linux amd64"], "is not os[/arch[/variant]]"),
        (["build", "img", "-t", "x:y", "--label", "=b"], "bad --label '=b'"),
        (["build", "img", "--context-only", "c.tar", "--label", "a=b"], "--context-only does not"),
        (["trace", "img", "--context", "x"], "--context is an option of slim itself"),
        (["trace", "img", "-H", "tcp://x:2375"], "-H is an option of slim itself"),
        (["--published-host", "tcp://x", "trace", "img"], "is not an address or a host name"),
        (["-H", "tcp://x:2375", "--context", "y", "compare", "img"], "conflicting options"),
        (["trace", "-q", "img"], "-q is an option of slim itself"),
        (["trace", "img", "/bin/app", "-g", "x"], "options meant for the app go after --"),
        (["trace", "img", "--duration", "-5"], "is not a number of seconds"),
        (["trace", "img", "--duration", "nan"], "is not a number of seconds"),
        (["trace", "img", "--ready-timeout", "inf"], "is not a number of seconds"),
        (["trace", "img", "--stop-signal", "SIGNOPE"], "unknown stop signal 'SIGNOPE'"),
        (["compare", "img", "--max-size", "lots"], "cannot read size 'lots'"),
        (["compare", "img", "--min-ratio", "nan"], "is not a number of times"),
        (["build", "img"], "give the micro image a name"),
        (["build", "img", "-t", "x", "--include", "relative/path"], "is not an absolute path"),
    ],
)
def test_usage_errors_exit_2_before_the_engine(args: list[str], says: str) -> None:
    assert_clear(slim(*args), ExitCode.USAGE, says)


def test_outputs_that_cannot_be_written_are_found_first(tmp_path: Path) -> None:
    assert_clear(
        slim("build", "img", "--context-only", "/nonexistent-dir/x.tar"),
        ExitCode.NOT_FOUND,
        "the directory /nonexistent-dir does not exist",
    )
    assert_clear(
        slim("trace", "img", "-o", str(tmp_path / "missing" / "t.json")),
        ExitCode.NOT_FOUND,
        "does not exist",
    )
    assert_clear(slim("trace", "img", "-o", str(tmp_path)), ExitCode.USAGE, "is a directory")


def test_files_that_are_not_what_they_claim(tmp_path: Path) -> None:
    binary = tmp_path / "binary"
    binary.write_bytes(Path(sys.executable).read_bytes()[:4096])
    nested = tmp_path / "nested.json"
    nested.write_text("[" * 200_000 + "]" * 200_000)
    for path in (binary, nested):
        assert_clear(
            slim("build", "img", "-t", "x", "--trace", str(path)),
            ExitCode.ERROR,
            "slim: error:",
        )
        assert_clear(slim("explain", str(path), "/x"), ExitCode.ERROR, "cannot read report")
    assert_clear(
        slim("build", "img", "-t", "x", "--include-file", str(binary)),
        ExitCode.USAGE,
        "is not a text file",
    )


def test_non_utf8_include_files_are_image_paths(tmp_path: Path) -> None:
    """Image paths need not be UTF-8: a pattern file in Latin-1 is read as
    bytes, and the error that follows is the engine's, not a traceback."""
    patterns = tmp_path / "patterns"
    patterns.write_bytes(b"# keep\n/data/caf\xe9\n")
    result = slim("build", "img", "-t", "x", "--include-file", str(patterns))
    assert_clear(result, ExitCode.ENGINE, "is not reachable (No such file or directory)")


def test_quiet_leaves_only_errors(tmp_path: Path) -> None:
    result = slim("-q", "explain", "/nonexistent-report.json", "/x")
    assert result.returncode == ExitCode.USAGE
    assert result.stdout == ""


def test_an_engine_that_is_not_there_fails_at_once() -> None:
    started = time.monotonic()
    result = slim("compare", "img")
    assert_clear(result, ExitCode.ENGINE, f"the Docker engine at {NO_ENGINE} is not reachable")
    assert "slim: hint:" in result.stderr
    assert time.monotonic() - started < 10


def test_an_engine_that_never_answers_is_given_up_on(tmp_path: Path) -> None:
    """A socket that accepts connections but never answers (a hung
    engine): slim says so after a bounded wait, not the SDK's 120 s."""
    path = tmp_path / "silent.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(16)
    try:
        started = time.monotonic()
        env = {**os.environ, "DOCKER_HOST": f"unix://{path}"}
        result = subprocess.run(
            [sys.executable, "-m", "slimmer", "compare", "img"],
            capture_output=True, text=True, env=env, timeout=90,
        )  # fmt: skip
        took = time.monotonic() - started
    finally:
        server.close()
    assert_clear(result, ExitCode.ENGINE, "did not answer within 10s")
    assert took < 40
