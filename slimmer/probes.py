"""Probes that exercise the app, the same way in `slim trace` and in `slim
verify`: HTTP requests once the app answers, the image's HEALTHCHECK,
commands run inside the container, clients run beside it, commands run on
the host. One plan (`plan_probes`) and one runner (`run_probes`) serve both,
so the answers a trace records are the ones verify compares.

Every probe reaches the app: all exposed TCP ports (and the ports probes
name) are published for every kind of probe, and a probe that is not HTTP
starts only once the app listens on the port it targets. Each answer is
checked against what the probe expects (`trace.answer_expected`): success,
or failure for a probe written with `!` in front."""

from __future__ import annotations

import hashlib
import http.client
import logging
import re
import shlex
import socket
import subprocess
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from slimmer.discovery import MAX_PAGE_BYTES, CrawlLimits, is_html, same_origin_paths
from slimmer.errors import EngineError, ExitCode, SlimError
from slimmer.trace import (
    EXPECT_FAILURE,
    Answer,
    ClientProbe,
    CommandAnswer,
    Discovery,
    ExecProbe,
    HealthcheckProbe,
    HostProbe,
    HttpAnswer,
    HttpProbe,
    ImageConfig,
    NoAnswer,
    Probe,
    ProbeResult,
    answer_expected,
    http_probe_problem,
)

if TYPE_CHECKING:
    from slimmer.engine import ContainerRef, Engine

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

OUTPUT_LINES_SHOWN = 10  # of a failed probe's output, in its error
EXPECT_HINT = (
    "a probe must succeed on the fat image, or the trace did not exercise the app: fix the "
    "probe or the app; if that failure is what the app should answer, put ! in front of "
    "the probe (--probe-exec '!CMD', --http-probe '!/path')"
)
HEALTHCHECK_RETRY_SECONDS = 0.5
LISTEN_SETTLE_SECONDS = 0.3  # a connection still open after this: the app accepted it

_METHOD = re.compile(r"^[A-Z]+$")


class ProbeError(SlimError):
    """A probe that cannot be parsed or run."""

    exit_code = ExitCode.USAGE


class NotReady(SlimError):
    """The app did not answer in time."""

    exit_code = ExitCode.APP


class AppGone(SlimError):
    """The app exited while it was waited for; the message says when
    ("before it answered on port 80")."""

    exit_code = ExitCode.APP


def expectation(text: str) -> tuple[str, bool]:
    """A probe's text without its leading `!`, and whether it had one (the
    probe is expected to fail)."""
    stripped = text.strip()
    if stripped.startswith(EXPECT_FAILURE):
        return stripped[len(EXPECT_FAILURE) :].strip(), True
    return stripped, False


def parse_http_probe(text: str) -> HttpProbe:
    """`[!][METHOD:]PATH[:PORT]`: `/`, `GET:/health`, `POST:/api:8080`,
    `/:8080`, `!/boom` (expected to fail: no answer or a 5xx)."""
    rest, expect_failure = expectation(text)
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
            "use [!][METHOD:]PATH[:PORT], e.g. GET:/health:8080",
        )
    probe = HttpProbe(method, rest, port, expect_failure)
    problem = http_probe_problem(probe)  # the rule a trace file's probes are read by
    if problem:
        raise ProbeError(
            f"bad --http-probe {text!r}: {problem}", "percent-encode spaces and control characters"
        )
    return probe


def split_command(text: str) -> tuple[str, ...]:
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise ProbeError(f"cannot parse command {text!r}: {exc}") from None
    if not argv:
        raise ProbeError(
            "empty probe command", "give the command to run, e.g. --probe-exec 'app-cli status'"
        )
    return tuple(argv)


def parse_exec_probe(text: str) -> ExecProbe:
    """`[!]CMD ARGS...`, split as a shell would (no shell runs it)."""
    command, expect_failure = expectation(text)
    return ExecProbe(split_command(command), expect_failure)


def parse_client_probe(text: str, port: int | None) -> ClientProbe:
    """`[!]CMD ARGS...`, run in a container of the fat image beside the app."""
    command, expect_failure = expectation(text)
    return ClientProbe(split_command(command), port, expect_failure)


def parse_host_probe(text: str, port: int | None) -> HostProbe:
    """`[!]SHELL COMMAND`, run on the host by /bin/sh."""
    command, expect_failure = expectation(text)
    if not command:
        raise ProbeError(
            "empty --probe-host command", "give a shell command to run on this machine"
        )
    return HostProbe(command, port, expect_failure)


# -- the plan -----------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ProbeRequest:
    """What the user (or a trace being replayed) asks for."""

    http: tuple[HttpProbe, ...] = ()
    execs: tuple[ExecProbe, ...] = ()
    clients: tuple[ClientProbe, ...] = ()
    hosts: tuple[HostProbe, ...] = ()
    default_get: bool = True  # GET / on each exposed TCP port when no other probe is given
    healthcheck: bool = True  # run the image's HEALTHCHECK command until it succeeds
    crawl: CrawlLimits | None = None  # follow the links of HTML answers (a trace)
    ready_timeout: float = 30.0
    host_env: Mapping[str, str] = field(default_factory=dict)  # base env of host probes

    def exercises(self) -> bool:
        """Whether anything but the default GET exercises the app."""
        return bool(self.http or self.execs or self.clients or self.hosts)


@dataclass(frozen=True, kw_only=True)
class ProbePlan:
    """The probes for one image, each HTTP, client and host probe with the
    container port it targets, and the ports to publish."""

    http: tuple[HttpProbe, ...]
    healthcheck: HealthcheckProbe | None
    execs: tuple[ExecProbe, ...]
    clients: tuple[ClientProbe, ...]
    client_image: str  # clients run in a container of the fat image
    hosts: tuple[HostProbe, ...]
    user: str  # HEALTHCHECK and exec probes run as this user
    healthcheck_timeout: float  # the image's HEALTHCHECK --timeout
    healthcheck_patience: float  # how long the HEALTHCHECK may take to pass
    ready_timeout: float
    host_env: Mapping[str, str]
    published: tuple[int, ...]  # every container port published, ascending
    target_port: int | None  # the first exposed TCP port: what exec probes wait for
    crawl: CrawlLimits | None = None

    def ports(self) -> list[int]:
        """Every port to publish: the exposed ones and the probed ones."""
        return list(self.published)

    def probes(self) -> list[Probe]:
        healthcheck: list[Probe] = [self.healthcheck] if self.healthcheck else []
        return [*self.http, *healthcheck, *self.execs, *self.clients, *self.hosts]

    def exercises(self) -> bool:
        return bool(self.http or self.execs or self.clients or self.hosts)

    def listening_ports(self) -> list[int]:
        """The ports that must accept connections before the probes that are
        not HTTP run (HTTP probes wait for an HTTP answer on their own)."""
        wanted = {p.port for p in (*self.clients, *self.hosts) if p.port is not None}
        if self.execs and self.target_port is not None:
            wanted.add(self.target_port)
        return sorted(wanted - {p.port for p in self.http})


def plan_probes(
    request: ProbeRequest, config: ImageConfig, user: str, client_image: str
) -> ProbePlan:
    """The probes of a request for an image: HTTP probes without a port go to
    each exposed TCP port, and an HTTP port that is not exposed is refused;
    client and host probes without a port target the first exposed TCP port.
    Clients run in containers of `client_image` (the fat image, also when
    the micro image is verified: it has no client)."""
    ports = config.tcp_ports()
    target = ports[0] if ports else None
    http = list(request.http)
    if not request.exercises() and request.default_get:
        # GET / only when nothing else exercises the app: a database probed by
        # its own client must not fail with "nothing answered HTTP".
        http = [HttpProbe("GET", "/", None)]
    planned: list[HttpProbe] = []
    for probe in http:
        if probe.port is None:
            planned.extend(replace(probe, port=port) for port in ports)
        elif probe.port in ports:
            planned.append(probe)
        else:
            raise ProbeError(
                f"port {probe.port} is not exposed by the image (exposed: "
                f"{', '.join(map(str, ports)) or 'none'})",
                "probe an exposed port, or EXPOSE it in the fat image",
            )
    clients = tuple(replace(p, port=target) if p.port is None else p for p in request.clients)
    hosts = tuple(replace(p, port=target) if p.port is None else p for p in request.hosts)
    published = {p.port for p in (*planned, *clients, *hosts) if p.port is not None} | set(ports)
    health = config.healthcheck_argv() if request.healthcheck else None
    return ProbePlan(
        http=tuple(planned),
        healthcheck=HealthcheckProbe(tuple(health)) if health else None,
        execs=request.execs,
        clients=clients,
        client_image=client_image,
        hosts=hosts,
        user=user or "0",
        healthcheck_timeout=_healthcheck_timeout(config),
        healthcheck_patience=max(request.ready_timeout, _start_period(config)),
        ready_timeout=request.ready_timeout,
        host_env=request.host_env,
        published=tuple(sorted(published)),
        target_port=target,
        crawl=request.crawl,
    )


def _healthcheck_timeout(config: ImageConfig) -> float:
    nanoseconds = config.healthcheck.timeout if config.healthcheck else 0
    return nanoseconds / 1e9 if nanoseconds > 0 else HEALTHCHECK_TIMEOUT


def _start_period(config: ImageConfig) -> float:
    return (config.healthcheck.start_period / 1e9) if config.healthcheck else 0.0


# -- running it ---------------------------------------------------------------


@dataclass(frozen=True)
class ProbeRun:
    results: tuple[ProbeResult, ...]
    ready_seconds: float | None  # how long the app took to answer (HTTP) or listen

    def unexpected(self) -> list[ProbeResult]:
        """The probes whose answer is not what they expect."""
        return [result for result in self.results if not result.ok]


@dataclass(frozen=True)
class Target:
    """Where probes reach a running container from here: the host, and the
    host port of each published container port."""

    host: str
    ports: Mapping[int, int]  # container port -> host port

    def host_env(self, port: int | None) -> dict[str, str]:
        """SLIM_TARGET_HOST, SLIM_TARGET_PORT (the host port of `port`),
        SLIM_TARGET_PORTS (every published host port, by container port) and
        SLIM_TARGET_PORT_<N> (the host port of container port N)."""
        env = {
            "SLIM_TARGET_HOST": self.host,
            "SLIM_TARGET_PORT": str(self.ports[port]) if port in self.ports else "",
            "SLIM_TARGET_PORTS": " ".join(str(self.ports[p]) for p in sorted(self.ports)),
        }
        env.update({f"SLIM_TARGET_PORT_{p}": str(h) for p, h in self.ports.items()})
        return env


def client_env(port: int | None, ports: Iterable[int]) -> dict[str, str]:
    """A client beside the app reaches it on 127.0.0.1 at the container's own
    ports: the same variables as a host probe gets, with those values."""
    known = sorted(ports)
    env = {
        "SLIM_TARGET_HOST": "127.0.0.1",
        "SLIM_TARGET_PORT": str(port) if port is not None else "",
        "SLIM_TARGET_PORTS": " ".join(map(str, known)),
    }
    env.update({f"SLIM_TARGET_PORT_{p}": str(p) for p in known})
    return env


def target_of(
    engine: Engine, container: ContainerRef, plan: ProbePlan, still_running: Callable[[], bool]
) -> Target:
    """The host ports of a started container's published ports. An app that
    already exited has none: that is AppGone, not an engine error."""
    if not still_running():
        raise AppGone("before any probe ran")
    try:
        ports = {port: engine.published_port(container, port) for port in plan.ports()}
    except EngineError:
        if not still_running():
            raise AppGone("before any probe ran") from None
        raise
    return Target(engine.published_host, ports)


def run_probes(
    engine: Engine,
    container: ContainerRef,
    plan: ProbePlan,
    *,
    still_running: Callable[[], bool],
    must_answer: bool,
    retry_healthcheck: bool = True,
) -> ProbeRun:
    """Exercise a running container. With must_answer (a trace, the fat image
    in verify), an app that never answers raises NotReady, one that exits
    AppGone; otherwise (the micro image in verify) that is the answer of the
    probes left, to be compared. With retry_healthcheck (a trace) the
    HEALTHCHECK runs until it passes, as the engine would keep running it;
    verify runs it once, after the engine's own health status is known."""
    results: list[ProbeResult] = []
    ready: float | None = None

    def record(probe: Probe, answer: Answer) -> None:
        results.append(ProbeResult(probe, answer, answer_expected(probe, answer)))
        quiet = isinstance(probe, HttpProbe) and probe.found_by is Discovery.CRAWL
        (log.debug if quiet else log.info)("probe %s: %s", probe.label(), answer.outcome())

    silent: dict[int, str] = {}  # ports that never answered: not waited for again
    pages: list[tuple[int, str, bytes]] = []  # HTML answers: where a crawl starts
    try:
        target = target_of(engine, container, plan, still_running)
        for probe in plan.http:
            assert probe.port is not None  # plan_probes gives every HTTP probe its port
            host_port = target.ports[probe.port]
            if probe.port in silent:
                record(probe, NoAnswer(silent[probe.port]))
                continue
            try:
                waited = wait_http_ready(
                    target.host, host_port, plan.ready_timeout, still_running, probe.port
                )
            except NotReady as exc:
                if must_answer:
                    raise _with_engine_hint(exc, engine) from None
                silent[probe.port] = exc.message
                record(probe, NoAnswer(exc.message))
                continue
            ready = waited if ready is None else ready
            exchange = http_exchange(target.host, host_port, probe.method, probe.path)
            record(probe, exchange.answer)
            if exchange.page is not None and probe.method == "GET":
                pages.append((probe.port, probe.path, exchange.page))
        if plan.crawl is not None and pages:
            crawl_links(target, plan.crawl, pages, {(p.port, p.path) for p in plan.http}, record)
        for port in plan.listening_ports():
            try:
                waited = wait_listening(
                    target.host, target.ports[port], plan.ready_timeout, still_running, port
                )
            except NotReady as exc:
                if must_answer:
                    raise _with_engine_hint(exc, engine) from None
                log.info("%s", exc.message)
                continue
            ready = waited if ready is None else max(ready, waited)
        if plan.healthcheck is not None:
            patience = plan.healthcheck_patience if retry_healthcheck else 0.0
            record(plan.healthcheck, healthcheck_answer(engine, container, plan, patience))
        for probe in plan.execs:
            record(probe, exec_answer(engine, container, probe.argv, plan.user, EXEC_PROBE_TIMEOUT))
        for probe in plan.clients:
            env = client_env(probe.port, plan.ports())
            record(probe, client_answer(engine, container, plan.client_image, probe.argv, env))
        for probe in plan.hosts:
            env = {**plan.host_env, **target.host_env(probe.port)}
            record(probe, run_host_probe(probe.command, env))
    except AppGone as exc:
        if must_answer:
            raise
        answered = {id(result.probe) for result in results}
        gone = NoAnswer(f"the app exited {exc.message}")
        for probe in plan.probes():
            if id(probe) not in answered:
                results.append(ProbeResult(probe, gone, answer_expected(probe, gone)))
    return ProbeRun(tuple(results), ready)


def answer_text(answer: Answer) -> str:
    """What a probe's answer says, for a user: the status, or the exit code
    and the last lines of its output."""
    if isinstance(answer, CommandAnswer):
        lines = (answer.stdout + answer.stderr).strip().splitlines()[-OUTPUT_LINES_SHOWN:]
        return "\n".join([answer.outcome(), *(f"  {line}" for line in lines)])
    return answer.outcome()


def unexpected_text(unexpected: list[ProbeResult], image: str) -> str:
    """What went wrong with probes whose answers are not what they expect."""
    lines = []
    for result in unexpected:
        wanted = "a failure" if result.probe.expect_failure else "success"
        lines.append(
            f"probe {result.probe.label()} expected {wanted}, got {answer_text(result.answer)}"
        )
    count = len(unexpected)
    plural = "s" if count != 1 else ""
    return f"{count} probe{plural} did not succeed on {image}: " + "\n".join(lines)


def crawl_links(
    target: Target,
    limits: CrawlLimits,
    pages: list[tuple[int, str, bytes]],
    done: set[tuple[int | None, str]],
    record: Callable[[Probe, Answer], None],
) -> None:
    """Follow the same-origin links of the HTML answers, breadth first, as
    GET probes found by the crawl, within its limits of pages, depth and
    time: routes no probe named (a docroot's subfolders, a listing's
    files) are exercised, and verify replays them."""
    deadline = time.monotonic() + limits.seconds
    queue = deque(
        (port, link, 1)
        for port, path, page in pages
        for link in same_origin_paths(page, path, target.host, port)
    )
    seen = set(done)
    requested = 0
    while queue and requested < limits.pages and time.monotonic() < deadline:
        port, path, depth = queue.popleft()
        if (port, path) in seen:
            continue
        seen.add((port, path))
        exchange = http_exchange(target.host, target.ports[port], "GET", path)
        requested += 1
        record(HttpProbe("GET", path, port, found_by=Discovery.CRAWL), exchange.answer)
        if exchange.page is not None and depth < limits.depth:
            queue.extend(
                (port, link, depth + 1)
                for link in same_origin_paths(exchange.page, path, target.host, port)
            )
    stopped = " (stopped at --crawl-pages)" if queue and requested >= limits.pages else ""
    if requested:
        log.info("crawl: %d pages linked from the app's answers%s", requested, stopped)


def healthcheck_answer(
    engine: Engine, container: ContainerRef, plan: ProbePlan, patience: float
) -> Answer:
    """The HEALTHCHECK command's answer, run as the engine runs it (CMD-SHELL
    with /bin/sh -c, as the image's USER, bounded by its --timeout); again
    every half second while it fails, until it passes or `patience` seconds
    have gone. A check that timed out is not run again: the engine cannot
    stop a command it exec'd, and they would pile up."""
    assert plan.healthcheck is not None
    deadline = time.monotonic() + patience
    while True:
        answer = exec_answer(
            engine, container, plan.healthcheck.argv, plan.user, plan.healthcheck_timeout
        )
        if answer_expected(plan.healthcheck, answer) or isinstance(answer, NoAnswer):
            return answer
        if time.monotonic() >= deadline:
            return answer
        time.sleep(HEALTHCHECK_RETRY_SECONDS)


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
    engine: Engine,
    container: ContainerRef,
    image: str,
    argv: tuple[str, ...],
    env: Mapping[str, str],
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
            environment=dict(env),
        )
    except EngineError as exc:
        return NoAnswer(exc.message)
    return command_answer(code, out, err)


def fingerprint(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")[:OUTPUT_KEPT]


@dataclass(frozen=True)
class HttpExchange:
    """An HTTP answer, and the start of its body when it is a page to look
    for links in."""

    answer: Answer
    page: bytes | None = None  # the body of an HTML answer, bounded


def http_exchange(
    host: str, port: int, method: str, path: str, timeout: float = 10
) -> HttpExchange:
    """One request; the answer as status, compared headers and body hash."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request(method, path, headers={"Connection": "close"})
        response = connection.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        return HttpExchange(NoAnswer(f"{type(exc).__name__}: {exc}"))
    finally:
        connection.close()
    headers = {
        name: str(response.getheader(name)) for name in COMPARED_HEADERS if response.getheader(name)
    }
    answer = HttpAnswer(response.status, headers, fingerprint(body), len(body))
    page = body[:MAX_PAGE_BYTES] if is_html(response.getheader("content-type")) else None
    return HttpExchange(answer, page)


def http_answer(host: str, port: int, method: str, path: str, timeout: float = 10) -> Answer:
    return http_exchange(host, port, method, path, timeout).answer


READY_POLL_FIRST = 0.01  # most apps are up within tens of milliseconds
READY_POLL_MAX = 0.1


def ready_polls() -> Iterator[float]:
    """How long to wait between two looks at an app that is starting: short
    at first, doubling up to READY_POLL_MAX."""
    delay = READY_POLL_FIRST
    while True:
        yield delay
        delay = min(delay * 2, READY_POLL_MAX)


def wait_http_ready(
    host: str,
    port: int,
    timeout: float,
    still_running: Callable[[], bool],
    app_port: int | None = None,
) -> float:
    """Wait until the port answers HTTP (any status). Returns the seconds
    waited; raises NotReady on time-out, AppGone when the app is gone."""
    shown = app_port or port  # the container's port, not the published one
    return wait_until(
        lambda: answers_http(host, port),
        timeout,
        still_running,
        gone=f"before it answered on port {shown}",
        late=NotReady(
            f"nothing answered HTTP on port {shown} within {timeout:.0f}s",
            "raise --ready-timeout, or use --until-exit for a batch job",
        ),
    )


def answers_http(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            pass
    except OSError:
        return False
    return isinstance(http_answer(host, port, "HEAD", "/", timeout=2), HttpAnswer)


def accepts_connections(host: str, port: int) -> bool:
    """Whether the app listens behind a published port: a connection that is
    refused, or closed at once, is not the app (the engine's port proxy
    accepts and then closes when nothing listens in the container); one
    that stays open, or says something, is."""
    try:
        with socket.create_connection((host, port), timeout=1) as connection:
            connection.settimeout(LISTEN_SETTLE_SECONDS)
            try:
                return connection.recv(1, socket.MSG_PEEK) != b""
            except TimeoutError:
                return True
    except OSError:
        return False


def wait_listening(
    host: str, port: int, timeout: float, still_running: Callable[[], bool], app_port: int
) -> float:
    """Wait until the app accepts connections on a port (a database, a
    broker: a probe that is not HTTP). Returns the seconds waited."""
    return wait_until(
        lambda: accepts_connections(host, port),
        timeout,
        still_running,
        gone=f"before it listened on port {app_port}",
        late=NotReady(
            f"nothing listened on port {app_port} within {timeout:.0f}s",
            "raise --ready-timeout, or name the port the probes talk to with --probe-port",
        ),
    )


def wait_until(
    ready: Callable[[], bool],
    timeout: float,
    still_running: Callable[[], bool],
    *,
    gone: str,
    late: NotReady,
) -> float:
    """Poll `ready` (see ready_polls): the seconds it took; AppGone(`gone`) when
    the app ended first, `late` after `timeout` seconds."""
    start = time.monotonic()
    delays = ready_polls()
    while not ready():
        if not still_running():
            raise AppGone(gone)
        if time.monotonic() - start > timeout:
            raise late
        time.sleep(next(delays))
    return time.monotonic() - start


def command_answer(exit_code: int, stdout: bytes, stderr: bytes) -> CommandAnswer:
    return CommandAnswer(
        exit_code=exit_code,
        stdout_sha256=fingerprint(stdout),
        stderr_sha256=fingerprint(stderr),
        stdout=_text(stdout),
        stderr=_text(stderr),
    )


def run_host_probe(
    command: str, env: Mapping[str, str], timeout: float = HOST_PROBE_TIMEOUT
) -> Answer:
    """Run a shell command on the host with `env` (the user's environment
    and the SLIM_TARGET_* variables that point it at the app)."""
    try:
        result = subprocess.run(
            command, shell=True, env=dict(env), capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return NoAnswer(f"timed out after {timeout:.0f}s")
    return command_answer(result.returncode, result.stdout, result.stderr)
