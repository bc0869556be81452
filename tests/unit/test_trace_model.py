"""The trace data model and the probe specs: pure, no engine."""

from __future__ import annotations

import http.server
import json
import os
import threading
from pathlib import Path

import pytest

from slimmer.probes import ProbeError, http_answer, parse_http_probe, run_host_probe
from slimmer.rootfs import Kind
from slimmer.trace import (
    Access,
    CommandAnswer,
    ExecProbe,
    Healthcheck,
    HttpAnswer,
    HttpProbe,
    ImageConfig,
    NoAnswer,
    ProbeResult,
    Trace,
    TracedFile,
    TraceError,
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


@pytest.mark.parametrize("text", ["health", "GET:health", "/:70000"])
def test_bad_http_probe(text: str) -> None:
    with pytest.raises(ProbeError):
        parse_http_probe(text)


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
        host = run_host_probe(
            "echo $SLIM_TARGET_HOST:$SLIM_TARGET_PORT", "127.0.0.1", port, {"PATH": "/usr/bin:/bin"}
        )
        assert isinstance(host, CommandAnswer)
        assert host.exit_code == 0 and host.stdout == f"127.0.0.1:{port}\n"
    finally:
        server.shutdown()
        server.server_close()
    refused = http_answer("127.0.0.1", port, "GET", "/")
    assert isinstance(refused, NoAnswer) and "ConnectionRefusedError" in refused.error
