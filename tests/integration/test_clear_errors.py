"""One line and the right exit status, never a traceback, for what a user
or a forged file can give slim; nothing a container prints reaches the
terminal as control sequences. Real slim processes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from slimmer.errors import ExitCode
from tests.helpers.slimrun import SlimRun, run_slim

ESC = "\x1b"


def assert_before_any_container(result: SlimRun) -> None:
    assert "Traceback" not in result.stderr, result.describe()
    assert "watching" not in result.stderr and "collecting" not in result.stderr, result.describe()


@pytest.fixture
def batch_trace(fixture_image, tmp_path: Path) -> tuple[str, Path]:
    image = fixture_image("batch")
    path = tmp_path / "batch.trace.json"
    made = run_slim("trace", image, "--until-exit", "--quiet-app", "-o", str(path))
    assert made.exit_code == 0, made.describe()
    return image, path


def test_a_uid_out_of_range_is_refused_before_any_container(
    fixture_image, image_from, tmp_path: Path
) -> None:
    given = run_slim(
        "trace", fixture_image("batch"), "--until-exit", "--user", "99999999999",
        "-o", str(tmp_path / "t.json"),
    )  # fmt: skip
    assert given.exit_code == ExitCode.USAGE, given.describe()
    assert "uid 99999999999 is out of range" in given.stderr
    assert_before_any_container(given)
    image = image_from({"Dockerfile": 'FROM busybox:latest\nUSER 1:99999999999\nCMD ["true"]\n'})
    configured = run_slim("trace", image, "--until-exit", "-o", str(tmp_path / "t.json"))
    assert configured.exit_code == ExitCode.ERROR, configured.describe()
    assert "gid 99999999999 is out of range" in configured.stderr
    assert_before_any_container(configured)


def _forged(trace: Path, tmp_path: Path, change) -> Path:
    data = json.loads(trace.read_text())
    change(data)
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(data))
    return forged


def _one_probe(probe: dict) -> Callable[[dict], None]:
    """A change to a trace: a served app's, with this one probe."""

    def change(data: dict) -> None:
        data["until_exit"] = False
        data["probes"] = [{"probe": probe, "answer": {"kind": "none", "error": "x"}, "ok": True}]

    return change


def test_a_crlf_in_a_traces_http_method_is_refused_when_it_is_read(
    batch_trace: tuple[str, Path], tmp_path: Path
) -> None:
    image, trace = batch_trace
    probe = {"kind": "http", "method": "GET\r\nX-Forged: 1", "path": "/", "port": 80}
    forged = _forged(trace, tmp_path, _one_probe(probe))
    result = run_slim("verify", image, image, "--trace", str(forged))
    assert result.exit_code == ExitCode.ERROR, result.describe()
    assert "probes[0]: the HTTP method 'GET\\r\\nX-Forged: 1' is not a token" in result.stderr
    assert_before_any_container(result)


def test_an_exec_probe_without_a_program_is_refused_when_it_is_read(
    batch_trace: tuple[str, Path], tmp_path: Path
) -> None:
    """An empty argv reached the engine as an exec it refused (exit 4)."""
    image, trace = batch_trace
    forged = _forged(trace, tmp_path, _one_probe({"kind": "exec", "argv": []}))
    result = run_slim("verify", image, image, "--trace", str(forged))
    assert result.exit_code == ExitCode.ERROR, result.describe()
    assert "probes[0]: the exec probe's command is empty or holds a NUL" in result.stderr
    assert_before_any_container(result)


def test_a_nul_in_a_traces_path_is_refused_when_it_is_read(
    batch_trace: tuple[str, Path], tmp_path: Path
) -> None:
    image, trace = batch_trace

    def add_nul(data: dict) -> None:
        data["files"][0]["path"] = "/etc/pass\x00wd"

    result = run_slim(
        "build", image, "--trace", str(_forged(trace, tmp_path, add_nul)),
        "--context-only", str(tmp_path / "c.tar"),
    )  # fmt: skip
    assert result.exit_code == ExitCode.ERROR, result.describe()
    assert "malformed trace: files[0]:" in result.stderr and "sensor" not in result.stderr
    assert_before_any_container(result)


def test_an_include_that_matches_nothing_is_said(
    batch_trace: tuple[str, Path], tmp_path: Path
) -> None:
    image, trace = batch_trace
    report = tmp_path / "report.json"
    result = run_slim(
        "build", image, "--trace", str(trace), "--context-only", str(tmp_path / "c.tar"),
        "--report", str(report), "--include", "/no/such", "--include", "/nowhere/*.conf",
        "--include", "/in",
    )  # fmt: skip
    assert result.exit_code == 0, result.describe()
    said = [
        "--include /no/such matched nothing in the image",
        "--include /nowhere/*.conf matched nothing in the image",
    ]
    warnings = json.loads(report.read_text())["warnings"]
    for line in said:
        assert line in result.stderr and line in warnings
    assert "--include /in matched" not in result.stderr


SHOUTING_APP = (
    "#!/bin/sh\n"
    "printf '\\033[31mRED\\033[0m \\033]0;title\\007 \\033[2J\\n'\n"
    "printf '\\342\\200\\256reversed\\n'\n"
    "exit 3\n"
)


def test_what_a_container_prints_reaches_the_terminal_escaped(image_from, tmp_path: Path) -> None:
    """The app's own lines (app| ...), the end of its output in an error,
    and the sensor's message about a command whose name holds an escape:
    control characters are shown as escapes, never sent."""
    image = image_from(
        {
            "app.sh": SHOUTING_APP,
            "Dockerfile": 'FROM busybox:latest\nCOPY app.sh /app.sh\nEXPOSE 80\nCMD ["/app.sh"]\n',
        }
    )
    out = str(tmp_path / "t.json")
    batch = run_slim("trace", image, "--until-exit", "--expect-exit", "3", "-o", out)
    served = run_slim("trace", image, "-o", out)  # exits at start: its output is in the error
    missing = run_slim("trace", image, "--until-exit", "-o", out, "--", f"/no{ESC}[2Jsuch")
    assert batch.exit_code == 0, batch.describe()
    assert served.exit_code == ExitCode.APP, served.describe()
    assert missing.exit_code == ExitCode.NOT_FOUND, missing.describe()
    for result in (batch, served, missing):
        assert ESC not in result.output and "\u202e" not in result.output, result.describe()
        assert "\x07" not in result.output
    assert "app| \\x1b[31mRED\\x1b[0m \\x1b]0;title\\x07 \\x1b[2J" in batch.stderr
    assert "\\u202ereversed" in batch.stderr
    assert "--- last output of the app ---\n\\x1b[31mRED" in served.stderr
    assert "/no\\x1b[2Jsuch" in missing.stderr
