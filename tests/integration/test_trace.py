"""slim trace on real images: the sensor as PID 1 in containers built from
fixtures/ and Dockerfile.build."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from slimmer.cli import cli, default_cache_dir
from slimmer.engine import Engine
from slimmer.errors import ExitCode
from slimmer.probes import ProbeRequest, split_command
from slimmer.trace import (
    CommandAnswer,
    ExecProbe,
    HttpAnswer,
    HttpProbe,
    NoAnswer,
    Trace,
    TraceStatus,
)
from slimmer.tracer import AppFailed, TraceOptions, trace_image
from tests.conftest import REPO
from tests.helpers.schemas import assert_valid
from tests.helpers.slimrun import run_slim


def traced(engine: Engine, image: str, exec_probes: tuple[str, ...] = (), **options) -> Trace:
    if exec_probes:
        execs = tuple(ExecProbe(split_command(p)) for p in exec_probes)
        options["probes"] = ProbeRequest(execs=execs)
    return trace_image(engine, image, TraceOptions(**options), default_cache_dir())


def accessed(trace: Trace) -> dict[str, set[str]]:
    return {f.path: set(f.access) for f in trace.files}


def test_nginx_trace_holds_what_nginx_touches(engine: Engine, fat_nginx: str) -> None:
    trace = traced(engine, fat_nginx)
    files = accessed(trace)
    libdir = "/usr/lib/x86_64-linux-gnu"
    assert {"executed", "opened"} <= files["/opt/nginx/sbin/nginx"]
    for library in ("libc.so.6", "libcrypto.so.3", "libssl.so.3", "ld-linux-x86-64.so.2"):
        assert "opened" in files[f"{libdir}/{library}"], library
    for path in ("/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/usr/share/zoneinfo/Etc/UTC"):
        assert "read" in files[path], path
    for path in ("conf/nginx.conf", "conf/mime.types", "html/index.html"):
        assert "read" in files[f"/opt/nginx/{path}"], path
    assert "written" in files["/opt/nginx/logs"]
    assert "created" in files["/opt/nginx/logs/access.log"]
    assert not [p for p in files if p.startswith("/.slim") or "/.slim/" in p]
    assert trace.complete and trace.exit_status == 0
    (probe,) = trace.probes
    assert probe.probe == HttpProbe("GET", "/", 80)
    expected = (REPO / "fixtures/nginx/index.html").read_bytes()
    assert isinstance(probe.answer, HttpAnswer)
    assert probe.answer.status == 200 and probe.answer.body_size == len(expected)


def test_trace_json_round_trips(engine: Engine, fat_nginx: str, tmp_path: Path) -> None:
    out = tmp_path / "t.json"
    result = CliRunner().invoke(
        cli, ["trace", fat_nginx, "-o", str(out), "--http-probe", "/missing"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert_valid("trace", data)
    assert data["schema"] == "slim.trace/2" and data["image"] == fat_nginx
    assert data["config"]["stop_signal"] == "SIGQUIT"
    assert data["probes"][0]["answer"]["status"] == 404
    assert Trace.load(out).files == tuple(sorted(Trace.load(out).files, key=lambda f: f.path))


def test_scratch_image_with_only_a_static_binary(engine: Engine, fixture_image) -> None:
    trace = traced(engine, fixture_image("static"), until_exit=True)
    files = accessed(trace)
    assert "executed" in files["/busybox"]
    assert "read" in files["/data/hello.txt"]
    assert trace.exit_status == 0


def test_non_root_user_runs_with_its_ids(engine: Engine, fixture_image, caplog) -> None:
    caplog.set_level("INFO")
    trace = traced(engine, fixture_image("nonroot"), until_exit=True)
    output = "\n".join(r.getMessage() for r in caplog.records)
    assert "inside: uid=4321 gid=1234 groups=1234 2345 cwd=/srv home=/home/app" in output
    assert "only the app user may read this" in output
    assert "read" in accessed(trace)["/srv/data.txt"]
    assert trace.user == "app"


def test_orphans_are_reaped_and_term_reaches_the_app(engine: Engine, fixture_image) -> None:
    # The exec probe lists every process state after the orphans have ended.
    probe = "sh -c 'sleep 1.5; cat /proc/[0-9]*/stat'"
    trace = traced(engine, fixture_image("init"), exec_probes=(probe,))
    (answer,) = [p.answer for p in trace.probes]
    assert isinstance(answer, CommandAnswer)
    states = [
        line.rsplit(")", 1)[1].split()[0] for line in answer.stdout.splitlines() if ")" in line
    ]
    assert states and "Z" not in states, answer.stdout
    assert trace.exit_status == 7  # the app's TERM trap ran


def test_exit_status_after_a_signal_is_128_plus_n(engine: Engine, fixture_image) -> None:
    trace = traced(engine, fixture_image("init"), cmd=["sleep", "1000"], duration=0.5)
    assert (trace.exit_status, trace.exit_signal) == (128 + signal.SIGTERM, signal.SIGTERM)


def test_batch_job_until_exit(engine: Engine, fixture_image) -> None:
    trace = traced(engine, fixture_image("batch"), until_exit=True)
    files = accessed(trace)
    assert "read" in files["/in/input.txt"]
    assert "read" in files["/usr/local/bin/job.sh"]
    assert "created" in files["/out/result"] and "written" in files["/out"]
    assert trace.exit_status == 0
    with pytest.raises(AppFailed, match="exited with status 3 \\(expected 0\\)") as failed:
        traced(engine, fixture_image("batch"), until_exit=True, cmd=["sh", "-c", "exit 3"])
    assert failed.value.exit_code == ExitCode.APP and failed.value.trace is not None
    assert failed.value.trace.status is TraceStatus.FAILED
    expected = traced(
        engine, fixture_image("batch"), until_exit=True, cmd=["sh", "-c", "exit 3"], expect_exit=3
    )
    assert expected.exit_status == 3 and expected.complete


def test_app_that_exits_at_start(engine: Engine, fat_nginx: str, tmp_path: Path) -> None:
    out = tmp_path / "t.json"
    result = CliRunner().invoke(
        cli, ["trace", fat_nginx, "-o", str(out), "--", "/opt/nginx/sbin/nginx", "-c", "/nope.conf"]
    )
    assert result.exit_code == ExitCode.APP, result.output
    assert "exited at start" in result.output
    assert '"/nope.conf" failed' in result.output  # nginx's own last words
    assert Trace.load(out).exit_status == 1


def test_command_not_in_the_image(engine: Engine, fixture_image) -> None:
    result = CliRunner().invoke(cli, ["trace", fixture_image("static"), "--", "/bin/nothing"])
    assert result.exit_code == ExitCode.NOT_FOUND, result.output
    assert "command not found in the image: /bin/nothing" in result.output


def test_unknown_image(engine: Engine) -> None:
    result = CliRunner().invoke(cli, ["trace", "slim-no-such-image:latest"])
    assert result.exit_code == ExitCode.NOT_FOUND
    assert "not found" in result.output and "hint" in result.output


def test_probe_on_a_port_that_is_not_exposed(engine: Engine, fat_nginx: str) -> None:
    result = CliRunner().invoke(cli, ["trace", fat_nginx, "--http-probe", "/:8080"])
    assert result.exit_code == ExitCode.USAGE
    assert "port 8080 is not exposed by the image (exposed: 80)" in result.output


def test_ctrl_c_leaves_no_container(engine: Engine, fixture_image: Callable[[str], str]) -> None:
    image = fixture_image("init")
    process = subprocess.Popen(
        [sys.executable, "-m", "slimmer", "trace", image, "--duration", "60"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stderr is not None
    deadline = time.monotonic() + 60
    for line in process.stderr:
        if "watching" in line or time.monotonic() > deadline:
            break
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == ExitCode.INTERRUPTED
    # the no_leftovers fixture fails the test if a container is still there


def test_deps_inside_an_image_without_python_or_ldd(
    engine: Engine, fat_nginx: str, fixture_image
) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["deps", "--image", fat_nginx, "--json", "/opt/nginx/sbin/nginx"])
    assert result.exit_code == 0, result.output
    assert_valid("deps", result.stdout)
    files = set(json.loads(result.stdout)["files"])
    assert {"/usr/lib/x86_64-linux-gnu/libssl.so.3", "/usr/lib/x86_64-linux-gnu/libc.so.6"} <= files
    static = runner.invoke(cli, ["deps", "--image", fixture_image("static"), "/busybox"])
    assert static.exit_code == 0 and static.output.startswith("/busybox (/busybox)")
    missing = runner.invoke(cli, ["deps", "--image", fat_nginx, "/no/such/file"])
    assert missing.exit_code == ExitCode.NOT_FOUND and "/no/such/file" in missing.output


@pytest.mark.parametrize(
    ("stop_signal", "script", "status"),
    [
        ("SIGKILL", "sleep 600", 128 + 9),
        ("SIGPWR", "trap 'exit 6' PWR; while true; do sleep 0.1; done", 6),
        ("SIGRTMIN+3", "trap 'exit 7' 37; while true; do sleep 0.1; done", 7),
    ],
)
def test_any_stop_signal_stops_the_app_and_keeps_the_trace(
    engine: Engine, image_from, stop_signal: str, script: str, status: int
) -> None:
    """The image's STOPSIGNAL goes to the app, never to the sensor: SIGKILL
    would end the sensor before it writes the trace, and a signal it does
    not handle (SIGPWR) would be ignored by a PID 1."""
    image = image_from(
        {
            "Dockerfile": "FROM busybox:latest\n"
            f"STOPSIGNAL {stop_signal}\n"
            f'CMD ["sh", "-c", "cat /etc/group >/dev/null; {script}"]\n'
        }
    )
    started = time.monotonic()
    trace = traced(engine, image, duration=0.5, stop_timeout=30)
    assert time.monotonic() - started < 20
    assert trace.exit_status == status
    assert "/etc/group" in accessed(trace)


def test_a_healthcheck_that_never_ends_is_bounded_by_its_timeout(
    engine: Engine, image_from, tmp_path: Path
) -> None:
    """The HEALTHCHECK runs during the trace; one that never ends is given up
    on after its own --timeout, as the engine would, and not run again. The
    fat image is then unhealthy: the trace fails, saved with the answer (a
    real slim process, bounded by the test)."""
    image = image_from(
        {
            "Dockerfile": "FROM busybox:latest\n"
            "HEALTHCHECK --timeout=2s CMD sleep 600\n"
            'CMD ["sh", "-c", "while true; do sleep 0.1; done"]\n'
        }
    )
    out = tmp_path / "t.json"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "slimmer", "trace", image, "-o", str(out)],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert result.returncode == ExitCode.APP, result.stderr
    assert time.monotonic() - started < 40
    assert "probe HEALTHCHECK expected success, got timed out after 2s" in result.stderr
    saved = Trace.load(out)
    (health,) = [p for p in saved.probes if p.probe.KIND == "healthcheck"]
    assert health.answer == NoAnswer("timed out after 2s") and not health.ok
    assert saved.status is TraceStatus.FAILED


ASK_SCRIPT = """
import os, urllib.request
host, port = os.environ["SLIM_TARGET_HOST"], os.environ["SLIM_TARGET_PORT"]
with urllib.request.urlopen(f"http://{host}:{port}/", timeout=5) as answer:
    same = os.environ["SLIM_TARGET_PORTS"] == port
    print(answer.status, same, os.environ["SLIM_TARGET_PORT_8080"])
"""


def test_every_probe_kind_reaches_the_app_without_an_http_probe(
    engine: Engine, fixture_image, tmp_path: Path
) -> None:
    """A host probe and a client probe alone (a service that is not HTTP is
    probed that way): each gets the app's port, and runs once the app
    listens there."""
    image = fixture_image("lockserver")
    script = tmp_path / "ask.py"
    script.write_text(ASK_SCRIPT)
    out = tmp_path / "t.json"
    result = run_slim(
        "trace", image, "-o", str(out), "--quiet-app",
        "--probe-host", f"{sys.executable} {script}",
        "--probe-client", "sh -c 'wget -q -O- http://$SLIM_TARGET_HOST:$SLIM_TARGET_PORT/'",
    )  # fmt: skip
    assert result.exit_code == 0, result.describe()
    trace = Trace.load(out)
    kinds = {p.probe.KIND: p for p in trace.probes}
    host, client = kinds["host"], kinds["client"]
    assert host.ok and isinstance(host.answer, CommandAnswer), host
    port = host.answer.stdout.split()[-1]
    assert host.answer.stdout == f"200 True {port}\n" and port.isdigit()
    assert client.ok and isinstance(client.answer, CommandAnswer), client
    assert client.answer.stdout == (REPO / "fixtures/lockserver/www/index.html").read_text()
    assert {p.probe.port for p in (host, client)} == {8080}  # type: ignore[union-attr]


def test_a_probe_that_fails_on_the_fat_image_fails_the_trace(
    engine: Engine, fat_nginx: str, tmp_path: Path
) -> None:
    """A probe that does not succeed means the trace did not exercise the
    app: exit 6, naming the probe and its output, the trace saved as
    failed; `!` says a failure is what the app should answer."""
    out = tmp_path / "t.json"
    failing = run_slim(
        "trace", fat_nginx, "-o", str(out), "--quiet-app",
        "--probe-exec", "cat /opt/nginx/html/nothing.html", "--probe-host", "exit 3",
    )  # fmt: skip
    assert failing.exit_code == ExitCode.APP, failing.describe()
    assert "2 probes did not succeed on" in failing.stderr
    assert "probe exec cat /opt/nginx/html/nothing.html expected success, got exit 1" in (
        failing.stderr
    )
    assert "No such file or directory" in failing.stderr
    assert "probe host exit 3 expected success, got exit 3" in failing.stderr
    assert Trace.load(out).status is TraceStatus.FAILED
    expected = run_slim(
        "trace", fat_nginx, "-o", str(out), "--quiet-app",
        "--probe-exec", "!cat /opt/nginx/html/nothing.html", "--http-probe", "/",
    )  # fmt: skip
    assert expected.exit_code == 0, expected.describe()
    assert all(p.ok for p in Trace.load(out).probes) and Trace.load(out).complete
