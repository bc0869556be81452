"""The trace data model and the probe specs: pure, no engine."""

from __future__ import annotations

import http.server
import json
import os
import threading
from pathlib import Path

import pytest

from slimmer.probes import (
    ProbeError,
    ProbeRequest,
    Target,
    http_answer,
    parse_client_probe,
    parse_exec_probe,
    parse_host_probe,
    parse_http_probe,
    plan_probes,
    run_host_probe,
)
from slimmer.rootfs import Kind
from slimmer.trace import (
    Access,
    ClientProbe,
    CommandAnswer,
    ExecProbe,
    Healthcheck,
    HealthcheckProbe,
    HostProbe,
    HttpAnswer,
    HttpProbe,
    ImageConfig,
    NoAnswer,
    ProbeResult,
    Trace,
    TracedFile,
    TraceError,
    answer_expected,
    command_line,
    default_trace_path,
    parse_signal,
)

INSPECT = {
    "Id": "sha256:abc",
    "Config": {
        "Entrypoint": ["/entry"],
        "Cmd": ["serve", "--port", "80"],
        "Env": ["PATH=/usr/bin", "A=b=c"],
        "WorkingDir": "/srv",
        "User": "app:grp",
        "ExposedPorts": {"80/tcp": {}, "53/udp": {}, "8443/tcp": {}},
        "Labels": {"org.example": "x"},
        "StopSignal": "SIGQUIT",
        "Healthcheck": {"Test": ["CMD", "/entry", "health"], "Interval": 1000000000},
        "Volumes": {"/data": {}},
    },
}


def test_image_config_from_inspect() -> None:
    config = ImageConfig.from_inspect(INSPECT)
    assert config.env_dict() == {"PATH": "/usr/bin", "A": "b=c"}
    assert config.tcp_ports() == [80, 8443]
    assert config.stop_signal_number() == 3
    assert config.volumes == ("/data",)
    assert config.healthcheck == Healthcheck(test=("CMD", "/entry", "health"), interval=10**9)
    assert config.healthcheck_argv() == ["/entry", "health"]


@pytest.mark.parametrize(
    ("cmd", "entrypoint", "expected"),
    [
        (None, None, ["/entry", "serve", "--port", "80"]),
        (["other"], None, ["/entry", "other"]),
        (None, ["/bin/sh"], ["/bin/sh"]),
        (["-c", "x"], ["/bin/sh"], ["/bin/sh", "-c", "x"]),
        (None, [], []),
    ],
)
def test_command_line_follows_docker_run(cmd, entrypoint, expected) -> None:
    assert command_line(ImageConfig.from_inspect(INSPECT), cmd, entrypoint) == expected


@pytest.mark.parametrize(("spec", "number"), [("SIGTERM", 15), ("quit", 3), ("9", 9), ("KILL", 9)])
def test_parse_signal(spec: str, number: int) -> None:
    assert parse_signal(spec) == number


def test_unknown_signal_is_an_error() -> None:
    with pytest.raises(TraceError):
        parse_signal("SIGNOPE")


@pytest.mark.parametrize(
    ("text", "method", "path", "port"),
    [
        ("/", "GET", "/", None),
        ("/health", "GET", "/health", None),
        ("HEAD:/x", "HEAD", "/x", None),
        ("POST:/api:8080", "POST", "/api", 8080),
        ("/:8080", "GET", "/", 8080),
        ("/a:b", "GET", "/a:b", None),
    ],
)
def test_parse_http_probe(text: str, method: str, path: str, port: int | None) -> None:
    probe = parse_http_probe(text)
    assert (probe.method, probe.path, probe.port) == (method, path, port)


@pytest.mark.parametrize(
    "text", ["health", "GET:health", "/:70000", "/a\r\nHost: evil", "GET:/a b", "/\x00", "!"]
)
def test_bad_http_probe(text: str) -> None:
    with pytest.raises(ProbeError):
        parse_http_probe(text)


def test_a_bang_expects_failure() -> None:
    assert parse_http_probe("!GET:/boom:80") == HttpProbe("GET", "/boom", 80, True)
    assert parse_exec_probe("! false --x") == ExecProbe(("false", "--x"), True)
    assert parse_client_probe("psql -c 'select 1'", 5432) == ClientProbe(
        ("psql", "-c", "select 1"), 5432, False
    )
    assert parse_host_probe("!exit 3", None) == HostProbe("exit 3", None, True)
    assert HostProbe("exit 3", None, True).label() == "!host exit 3"
    for bad in ("", "!", "  ", "'unclosed"):
        with pytest.raises(ProbeError):
            parse_exec_probe(bad)
    with pytest.raises(ProbeError):
        parse_host_probe("! ", None)


def _command(code: int) -> CommandAnswer:
    return CommandAnswer(code, "a" * 64, "b" * 64, "", "")


@pytest.mark.parametrize(
    ("probe", "answer", "expected"),
    [
        (HttpProbe("GET", "/", 80), HttpAnswer(404, {}, "a" * 64, 0), True),
        (HttpProbe("GET", "/", 80), HttpAnswer(500, {}, "a" * 64, 0), False),
        (HttpProbe("GET", "/", 80), NoAnswer("refused"), False),
        (HttpProbe("GET", "/", 80, True), HttpAnswer(503, {}, "a" * 64, 0), True),
        (HttpProbe("GET", "/", 80, True), HttpAnswer(200, {}, "a" * 64, 0), False),
        (ExecProbe(("x",)), _command(0), True),
        (ExecProbe(("x",)), _command(1), False),
        (ExecProbe(("x",), True), _command(1), True),
        (ExecProbe(("x",), True), _command(0), False),
        (HostProbe("x"), NoAnswer("timed out"), False),
        (ClientProbe(("x",), 5432), _command(2), False),
        (HealthcheckProbe(("x",)), _command(1), False),
    ],
)
def test_answer_expected(probe, answer, expected: bool) -> None:
    assert answer_expected(probe, answer) is expected


def test_every_probe_kind_reaches_the_app() -> None:
    """Client and host probes get the first exposed TCP port (or the one
    they name), every such port is published, and exec probes wait for the
    app to listen, also when no HTTP probe is given."""
    config = ImageConfig.from_inspect(INSPECT)  # exposes 80/tcp, 8443/tcp, 53/udp
    request = ProbeRequest(
        execs=(ExecProbe(("status",)),),
        clients=(ClientProbe(("ping",)), ClientProbe(("ask",), 9000)),
        hosts=(HostProbe("check"),),
        default_get=True,
    )
    plan = plan_probes(request, config, "app", "fat")
    assert plan.http == ()  # other probes exercise the app: no default GET
    assert [p.port for p in plan.clients] == [80, 9000] and plan.hosts[0].port == 80
    assert plan.ports() == [80, 8443, 9000]
    assert plan.listening_ports() == [80, 9000]
    only_get = plan_probes(ProbeRequest(), config, "app", "fat")
    assert [p.port for p in only_get.http] == [80, 8443] and only_get.listening_ports() == []


def test_a_shell_healthcheck_runs_with_bin_sh_whatever_shell_says() -> None:
    """Docker and Podman run CMD-SHELL with /bin/sh -c (moby #28385): the
    image's SHELL is kept too, for an engine that would use it."""
    inspect = {
        "Config": {
            "Shell": ["/bin/ash", "-c"],
            "Healthcheck": {"Test": ["CMD-SHELL", "wget -q -O- http://127.0.0.1/"]},
        }
    }
    config = ImageConfig.from_inspect(inspect)
    assert config.healthcheck_argv() == ["/bin/sh", "-c", "wget -q -O- http://127.0.0.1/"]
    assert config.healthcheck_programs() == ["/bin/sh", "/bin/ash"]
    none = ImageConfig.from_inspect({"Config": {"Healthcheck": {"Test": ["NONE"]}}})
    assert not none.has_healthcheck() and none.healthcheck_programs() == []


def test_trace_round_trip_keeps_odd_paths(tmp_path: Path) -> None:
    odd = os.fsdecode(b"/data/caf\xe9\nname")
    trace = Trace(
        image="x:y",
        image_id="sha256:1",
        config=ImageConfig.from_inspect(INSPECT),
        command=("/entry",),
        user="app",
        files=(TracedFile(odd, Kind.FILE, (Access.OPENED, Access.READ)),),
        probes=(
            ProbeResult(HttpProbe("GET", "/", 80), HttpAnswer(200, {}, "a" * 64, 3), True),
            ProbeResult(ExecProbe(("ls", odd)), NoAnswer("timed out"), False),
        ),
    )
    path = tmp_path / "t.json"
    trace.save(path)
    assert Trace.load(path) == trace
    assert os.fsencode(Trace.load(path).files[0].path) == b"/data/caf\xe9\nname"


@pytest.mark.parametrize("text", ["{}", "[]", "not json", json.dumps({"schema": "slim.trace/0"})])
def test_foreign_files_are_refused(text: str) -> None:
    with pytest.raises(TraceError):
        Trace.from_json(text)


def test_default_trace_path_is_file_safe() -> None:
    assert default_trace_path("reg.example:5000/team/app:1.0") == Path(
        ".slim/reg.example_5000_team_app_1.0.trace.json"
    )


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello"
        self.send_response(200 if self.path == "/" else 404)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        return


def test_http_answer_and_host_probe() -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        answer = http_answer("127.0.0.1", port, "GET", "/")
        assert isinstance(answer, HttpAnswer)
        assert answer.status == 200 and answer.body_size == 5
        assert answer.headers == {"content-type": "text/plain", "content-length": "5"}
        missing = http_answer("127.0.0.1", port, "GET", "/x")
        assert isinstance(missing, HttpAnswer) and missing.status == 404
        target = Target("127.0.0.1", {5432: port, 80: 41000})
        host = run_host_probe(
            "echo $SLIM_TARGET_HOST:$SLIM_TARGET_PORT $SLIM_TARGET_PORT_80 $SLIM_TARGET_PORTS",
            {"PATH": "/usr/bin:/bin", **target.host_env(5432)},
        )
        assert isinstance(host, CommandAnswer)
        assert host.exit_code == 0 and host.stdout == f"127.0.0.1:{port} 41000 41000 {port}\n"
    finally:
        server.shutdown()
        server.server_close()
    refused = http_answer("127.0.0.1", port, "GET", "/")
    assert isinstance(refused, NoAnswer) and "ConnectionRefusedError" in refused.error
