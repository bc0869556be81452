"""Probes that exercise the app while it is traced, and the fingerprints of
their answers that verify compares: HTTP requests, commands run inside the
container, commands run on the host."""

from __future__ import annotations

import hashlib
import http.client
import re
import shlex
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from slimmer.errors import ExitCode, SlimError

# Headers whose value is part of the answer; Date and Server never are.
COMPARED_HEADERS = (
    "content-type",
    "content-length",
    "content-encoding",
    "location",
    "etag",
    "last-modified",
)
OUTPUT_KEPT = 4096  # characters of a command's output kept in the trace

_METHOD = re.compile(r"^[A-Z]+$")


class ProbeError(SlimError):
    """A probe that cannot be parsed or run."""

    exit_code = ExitCode.USAGE


class NotReady(SlimError):
    """The app did not answer in time."""

    exit_code = ExitCode.APP


class AppGone(SlimError):
    """The app exited while it was waited for."""

    exit_code = ExitCode.APP


@dataclass(frozen=True)
class HttpProbe:
    method: str
    path: str
    port: int | None  # None: each exposed port

    def spec(self, port: int) -> dict[str, Any]:
        return {"method": self.method, "path": self.path, "port": port}


def parse_http_probe(text: str) -> HttpProbe:
    """`[METHOD:]PATH[:PORT]`: `/`, `GET:/health`, `POST:/api:8080`, `/:8080`."""
    rest = text.strip()
    method = "GET"
    head, sep, tail = rest.partition(":")
    if sep and _METHOD.match(head):
        method, rest = head, tail
    port = None
    path, sep, maybe_port = rest.rpartition(":")
    if sep and maybe_port.isdigit():
        port, rest = int(maybe_port), path
    if not rest.startswith("/"):
        raise ProbeError(
            f"bad --http-probe {text!r}: the path must start with '/'",
            "use [METHOD:]PATH[:PORT], e.g. GET:/health:8080",
        )
    if port is not None and not 0 < port < 65536:
        raise ProbeError(f"bad --http-probe {text!r}: port out of range")
    return HttpProbe(method, rest, port)


def fingerprint(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")[:OUTPUT_KEPT]


def http_answer(
    host: str, port: int, method: str, path: str, timeout: float = 10
) -> dict[str, Any]:
    """One request; the answer as status, compared headers and body hash."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request(method, path, headers={"Connection": "close"})
        response = connection.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        connection.close()
    headers = {
        name: response.getheader(name) for name in COMPARED_HEADERS if response.getheader(name)
    }
    return {
        "status": response.status,
        "headers": headers,
        "body_sha256": fingerprint(body),
        "body_size": len(body),
    }


def wait_http_ready(
    host: str,
    port: int,
    timeout: float,
    still_running: Callable[[], bool],
    app_port: int | None = None,
) -> float:
    """Wait until the port answers HTTP (any status). Returns the seconds
    waited; raises NotReady on time-out, AppGone when the app is gone."""
    start = time.monotonic()
    shown = app_port or port  # the container's port, not the published one
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                pass
            answer = http_answer(host, port, "HEAD", "/", timeout=2)
            if "status" in answer:
                return time.monotonic() - start
        except OSError:
            pass
        if not still_running():
            raise AppGone(f"the app exited before it answered on port {shown}")
        if time.monotonic() - start > timeout:
            raise NotReady(
                f"nothing answered HTTP on port {shown} within {timeout:.0f}s",
                "raise --ready-timeout, or use --until-exit for a batch job",
            )
        time.sleep(0.1)


def command_answer(exit_code: int, stdout: bytes, stderr: bytes) -> dict[str, Any]:
    return {
        "exit_code": exit_code,
        "stdout_sha256": fingerprint(stdout),
        "stderr_sha256": fingerprint(stderr),
        "stdout": _text(stdout),
        "stderr": _text(stderr),
    }


def split_command(text: str) -> list[str]:
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise ProbeError(f"cannot parse command {text!r}: {exc}") from None
    if not argv:
        raise ProbeError("empty probe command")
    return argv


def run_host_probe(
    command: str, host: str, port: int | None, base_env: Mapping[str, str], timeout: float = 60
) -> dict[str, Any]:
    """Run a shell command on the host, pointed at the app through
    SLIM_TARGET_HOST and SLIM_TARGET_PORT."""
    env = dict(base_env)
    env["SLIM_TARGET_HOST"] = host
    env["SLIM_TARGET_PORT"] = str(port or "")
    try:
        result = subprocess.run(
            command, shell=True, env=env, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f}s"}
    return command_answer(result.returncode, result.stdout, result.stderr)
