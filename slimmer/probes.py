"""Probes that exercise the app, the same way in `slim trace` and in `slim
verify`: HTTP requests once the app answers, the image's HEALTHCHECK,
commands run inside the container, commands run on the host. One plan
(`plan_probes`) and one runner (`run_probes`) serve both, so the answers a
trace records are the ones verify compares."""

from __future__ import annotations

import hashlib
import http.client
import logging
import re
import shlex
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from slimmer.engine import ContainerRef, Engine
from slimmer.errors import EngineError, ExitCode, SlimError
from slimmer.trace import (
    Answer,
    ClientProbe,
    CommandAnswer,
    ExecProbe,
    HealthcheckProbe,
    HostProbe,
    HttpAnswer,
    HttpProbe,
    ImageConfig,
    NoAnswer,
    Probe,
    ProbeResult,
)

log = logging.getLogger(__name__)

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
HOST_PROBE_TIMEOUT = 60.0
EXEC_PROBE_TIMEOUT = 60.0
HEALTHCHECK_TIMEOUT = 30.0  # the engine's default HEALTHCHECK --timeout

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


def split_command(text: str) -> tuple[str, ...]:
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise ProbeError(f"cannot parse command {text!r}: {exc}") from None
    if not argv:
        raise ProbeError("empty probe command")
    return tuple(argv)


# -- the plan -----------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ProbeRequest:
    """What the user (or a trace being replayed) asks for."""

    http: tuple[HttpProbe, ...] = ()
    execs: tuple[ExecProbe, ...] = ()
    clients: tuple[ClientProbe, ...] = ()
    hosts: tuple[HostProbe, ...] = ()
    default_get: bool = True  # GET / on each exposed TCP port when no other probe is given
    healthcheck: bool = True  # run the image's HEALTHCHECK command once
    ready_timeout: float = 30.0
    host_env: Mapping[str, str] = field(default_factory=dict)  # base env of host probes

    def exercises(self) -> bool:
        """Whether anything but the default GET exercises the app."""
        return bool(self.http or self.execs or self.clients or self.hosts)


@dataclass(frozen=True, kw_only=True)
class ProbePlan:
    """The probes for one image, each HTTP probe with its port."""

    http: tuple[HttpProbe, ...]
    healthcheck: HealthcheckProbe | None
    execs: tuple[ExecProbe, ...]
    clients: tuple[ClientProbe, ...]
    client_image: str  # clients run in a container of the fat image
    hosts: tuple[HostProbe, ...]
    user: str  # HEALTHCHECK and exec probes run as this user
    healthcheck_timeout: float  # the image's HEALTHCHECK --timeout
    ready_timeout: float
    host_env: Mapping[str, str]

    def ports(self, config: ImageConfig) -> list[int]:
        """Every port to publish: the probed ones and the exposed ones."""
        return sorted({p.port for p in self.http if p.port is not None} | set(config.tcp_ports()))

    def probes(self) -> list[Probe]:
        healthcheck: list[Probe] = [self.healthcheck] if self.healthcheck else []
        return [*self.http, *healthcheck, *self.execs, *self.clients, *self.hosts]

    def exercises(self) -> bool:
        return bool(self.http or self.execs or self.clients or self.hosts)


def plan_probes(
    request: ProbeRequest, config: ImageConfig, user: str, client_image: str
) -> ProbePlan:
    """The probes of a request for an image: HTTP probes without a port go to
    each exposed TCP port, and a port that is not exposed is refused.
    Clients run in containers of `client_image` (the fat image, also when
    the micro image is verified: it has no client)."""
    ports = config.tcp_ports()
    http = list(request.http)
    if not request.exercises() and request.default_get:
        # GET / only when nothing else exercises the app: a database probed by
        # its own client must not fail with "nothing answered HTTP".
        http = [HttpProbe("GET", "/", None)]
    planned: list[HttpProbe] = []
    for probe in http:
        if probe.port is None:
            planned.extend(HttpProbe(probe.method, probe.path, port) for port in ports)
        elif probe.port in ports:
            planned.append(probe)
        else:
            raise ProbeError(
                f"port {probe.port} is not exposed by the image (exposed: "
                f"{', '.join(map(str, ports)) or 'none'})",
                "probe an exposed port, or EXPOSE it in the fat image",
            )
    health = config.healthcheck_argv() if request.healthcheck else None
    return ProbePlan(
        http=tuple(planned),
        healthcheck=HealthcheckProbe(tuple(health)) if health else None,
        execs=request.execs,
        clients=request.clients,
        client_image=client_image,
        hosts=request.hosts,
        user=user or "0",
        healthcheck_timeout=_healthcheck_timeout(config),
        ready_timeout=request.ready_timeout,
        host_env=request.host_env,
    )


def _healthcheck_timeout(config: ImageConfig) -> float:
    nanoseconds = config.healthcheck.timeout if config.healthcheck else 0
    return nanoseconds / 1e9 if nanoseconds > 0 else HEALTHCHECK_TIMEOUT


# -- running it ---------------------------------------------------------------


@dataclass(frozen=True)
class ProbeRun:
    results: tuple[ProbeResult, ...]
    ready_seconds: float | None  # how long the first HTTP port took to answer


def run_probes(
    engine: Engine,
    container: ContainerRef,
    plan: ProbePlan,
    *,
    still_running: Callable[[], bool],
    must_answer: bool,
) -> ProbeRun:
    """Exercise a running container. With must_answer (a trace), an app that
    never answers HTTP raises NotReady or AppGone; otherwise (verify) that
    is the probe's answer, to be compared."""
    host = engine.published_host
    host_ports = {port: engine.published_port(container, port) for port in _http_ports(plan)}
    results: list[ProbeResult] = []
    ready: float | None = None
    for probe in plan.http:
        assert probe.port is not None  # plan_probes gives every HTTP probe its port
        host_port = host_ports[probe.port]
        try:
            waited = wait_http_ready(host, host_port, plan.ready_timeout, still_running, probe.port)
        except (NotReady, AppGone) as exc:
            if must_answer:
                raise _with_engine_hint(exc, engine) from None
            results.append(ProbeResult(probe, NoAnswer(exc.message), False))
            continue
        ready = waited if ready is None else ready
        answer = http_answer(host, host_port, probe.method, probe.path)
        results.append(ProbeResult(probe, answer, isinstance(answer, HttpAnswer)))
        log.info("probe %s on %d: %s", f"{probe.method} {probe.path}", probe.port, answer.outcome())
    if plan.healthcheck is not None:
        answer = exec_answer(
            engine, container, plan.healthcheck.argv, plan.user, plan.healthcheck_timeout
        )
        ok = isinstance(answer, CommandAnswer) and answer.exit_code == 0
        results.append(ProbeResult(plan.healthcheck, answer, ok))
        log.info("probe HEALTHCHECK: %s", answer.outcome())
    for probe in plan.execs:
        answer = exec_answer(engine, container, probe.argv, plan.user, EXEC_PROBE_TIMEOUT)
        results.append(ProbeResult(probe, answer, isinstance(answer, CommandAnswer)))
        log.info("probe %s: %s", probe.label(), answer.outcome())
    for probe in plan.clients:
        answer = client_answer(engine, container, plan.client_image, probe.argv)
        results.append(ProbeResult(probe, answer, isinstance(answer, CommandAnswer)))
        log.info("probe %s: %s", probe.label(), answer.outcome())
    exposed = sorted(host_ports)
    first_port = host_ports[exposed[0]] if exposed else None
    for probe in plan.hosts:
        answer = run_host_probe(probe.command, host, first_port, plan.host_env)
        results.append(ProbeResult(probe, answer, isinstance(answer, CommandAnswer)))
        log.info("probe %s: %s", probe.label(), answer.outcome())
    return ProbeRun(tuple(results), ready)


def _with_engine_hint(error: SlimError, engine: Engine) -> SlimError:
    """A port that never answered may be published where slim does not look
    (an engine behind a tunnel): the hint says how to name the place."""
    where = engine.unanswered_hint()
    if isinstance(error, NotReady) and where:
        error.hint = f"{where}; otherwise {error.hint}" if error.hint else where
    return error


def exec_answer(
    engine: Engine, container: ContainerRef, argv: tuple[str, ...], user: str, timeout: float
) -> Answer:
    """A command run in the container, bounded in time."""
    result = engine.exec_run(container, list(argv), user, timeout)
    if result.timed_out or result.exit_code is None:
        return NoAnswer(f"timed out after {timeout:g}s")
    return command_answer(result.exit_code, result.stdout, result.stderr)


def client_answer(
    engine: Engine, container: ContainerRef, image: str, argv: tuple[str, ...]
) -> Answer:
    """A client run in its own container of `image`, in `container`'s network."""
    try:
        code, out, err = engine.run_to_exit(
            image,
            [],
            engine.new_run_id(),
            timeout=EXEC_PROBE_TIMEOUT,
            entrypoint=list(argv),
            network_of=container,
        )
    except EngineError as exc:
        return NoAnswer(exc.message)
    return command_answer(code, out, err)


def _http_ports(plan: ProbePlan) -> list[int]:
    return sorted({p.port for p in plan.http if p.port is not None})


def fingerprint(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")[:OUTPUT_KEPT]


def http_answer(host: str, port: int, method: str, path: str, timeout: float = 10) -> Answer:
    """One request; the answer as status, compared headers and body hash."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request(method, path, headers={"Connection": "close"})
        response = connection.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        return NoAnswer(f"{type(exc).__name__}: {exc}")
    finally:
        connection.close()
    headers = {
        name: str(response.getheader(name)) for name in COMPARED_HEADERS if response.getheader(name)
    }
    return HttpAnswer(response.status, headers, fingerprint(body), len(body))


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
            if isinstance(http_answer(host, port, "HEAD", "/", timeout=2), HttpAnswer):
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


def command_answer(exit_code: int, stdout: bytes, stderr: bytes) -> CommandAnswer:
    return CommandAnswer(
        exit_code=exit_code,
        stdout_sha256=fingerprint(stdout),
        stderr_sha256=fingerprint(stderr),
        stdout=_text(stdout),
        stderr=_text(stderr),
    )


def run_host_probe(
    command: str,
    host: str,
    port: int | None,
    base_env: Mapping[str, str],
    timeout: float = HOST_PROBE_TIMEOUT,
) -> Answer:
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
        return NoAnswer(f"timed out after {timeout:.0f}s")
    return command_answer(result.returncode, result.stdout, result.stderr)
