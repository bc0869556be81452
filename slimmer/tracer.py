"""`slim trace`: run the app in a container of the fat image under the
sensor, exercise it with probes, stop it, and keep what it touched."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from slimmer.bundle import sensor_bundle
from slimmer.engine import Engine, new_run_id
from slimmer.errors import ExitCode, NotFound, SlimError
from slimmer.probes import (
    AppGone,
    HttpProbe,
    NotReady,
    ProbeError,
    command_answer,
    http_answer,
    run_host_probe,
    split_command,
    wait_http_ready,
)
from slimmer.runner import SensorContainer, SensorError, sensor_container
from slimmer.sensor.protocol import (
    EXIT_COMMAND_NOT_FOUND,
    EXIT_SENSOR_ERROR,
    EXIT_WATCH_LIMIT,
    Mode,
    RunConfig,
)
from slimmer.trace import ImageConfig, ProbeResult, Trace, TracedFile, command_line, parse_signal

log = logging.getLogger(__name__)

IDLE_TRACE_SECONDS = 2.0  # a run with nothing to probe and no --duration


class AppFailed(SlimError):
    """The traced app exited when it should have served, or failed."""

    exit_code = ExitCode.APP

    def __init__(self, message: str, hint: str | None, trace: Trace | None) -> None:
        super().__init__(message, hint)
        self.trace = trace


@dataclass(frozen=True)
class TraceOptions:
    cmd: list[str] | None = None  # replaces the image's CMD
    entrypoint: list[str] | None = None
    user: str | None = None
    http_probes: tuple[HttpProbe, ...] = ()
    exec_probes: tuple[str, ...] = ()
    host_probes: tuple[str, ...] = ()
    default_probes: bool = True  # GET / on each exposed port when none is given
    duration: float = 0.0  # extra seconds of traced run after the probes
    until_exit: bool = False
    exit_timeout: float | None = None
    ready_timeout: float = 30.0
    stop_timeout: float = 10.0
    stop_signal: str | None = None
    echo_app: bool = True
    host_env: Mapping[str, str] = field(default_factory=dict)


def _http_probes(options: TraceOptions, config: ImageConfig) -> list[tuple[HttpProbe, int]]:
    ports = config.tcp_ports()
    probes = list(options.http_probes)
    if not probes and options.default_probes and not options.until_exit:
        probes = [HttpProbe("GET", "/", None)]
    planned = []
    for probe in probes:
        if probe.port is not None:
            if probe.port not in ports:
                raise ProbeError(
                    f"port {probe.port} is not exposed by the image (exposed: "
                    f"{', '.join(map(str, ports)) or 'none'})",
                    "probe an exposed port, or EXPOSE it in the fat image",
                )
            planned.append((probe, probe.port))
        else:
            planned.extend((probe, port) for port in ports)
    return planned


def _sensor_failure(sensor: SensorContainer, status: int | None) -> SlimError | None:
    message = sensor.last_error()
    if status == EXIT_COMMAND_NOT_FOUND and message and "command not found" in message:
        return NotFound(
            message, "give the command's path in the image after --, or fix ENTRYPOINT/CMD"
        )
    if status == EXIT_WATCH_LIMIT:
        error = SensorError(
            message or "the inotify watch limit was reached",
            "raise it on the host: sysctl -w fs.inotify.max_user_watches=1048576",
        )
        error.exit_code = ExitCode.RESOURCE
        return error
    if status == EXIT_SENSOR_ERROR:
        return SensorError(message or "the sensor failed", "run with --debug for details")
    return None


def _run_probes(
    engine: Engine,
    sensor: SensorContainer,
    config: ImageConfig,
    options: TraceOptions,
    http_plan: list[tuple[HttpProbe, int]],
    user: str,
    seconds: dict[str, float],
) -> list[ProbeResult]:
    """Exercise the running app: HTTP once it answers, the HEALTHCHECK, exec
    and host probes, then --duration (or a short idle run without probes)."""
    host = engine.published_host
    probes: list[ProbeResult] = []
    for probe, port in http_plan:
        _, host_port = engine.published_port(sensor.container, f"{port}/tcp")
        waited = wait_http_ready(host, host_port, options.ready_timeout, sensor.running, port)
        seconds.setdefault("ready", round(waited, 3))
        answer = http_answer(host, host_port, probe.method, probe.path)
        probes.append(ProbeResult("http", probe.spec(port), answer, "status" in answer))
        outcome = answer.get("status", answer.get("error"))
        log.info("probe %s %s on %d: %s", probe.method, probe.path, port, outcome)
    health = config.healthcheck_argv()
    if health is not None:
        # The engine runs it on a timer, too seldom to fire in a short trace:
        # run it once now, traced, so what it needs is kept.
        code, out, err = engine.exec_run(sensor.container, health, user or "0")
        probes.append(
            ProbeResult("healthcheck", {"argv": health}, command_answer(code, out, err), code == 0)
        )
        log.info("probe HEALTHCHECK: exit %d", code)
    for command in options.exec_probes:
        code, out, err = engine.exec_run(sensor.container, split_command(command), user or "0")
        probes.append(
            ProbeResult("exec", {"command": command}, command_answer(code, out, err), True)
        )
        log.info("probe exec %r: exit %d", command, code)
    ports = config.tcp_ports()
    host_port = engine.published_port(sensor.container, f"{ports[0]}/tcp")[1] if ports else None
    for command in options.host_probes:
        answer = run_host_probe(command, host, host_port, options.host_env)
        probes.append(ProbeResult("host", {"command": command}, answer, "exit_code" in answer))
        log.info("probe host %r: exit %s", command, answer.get("exit_code"))
    if options.duration:
        time.sleep(options.duration)
    elif not (http_plan or options.exec_probes or options.host_probes):
        log.info("no probes: tracing %.0fs of the app's run", IDLE_TRACE_SECONDS)
        time.sleep(IDLE_TRACE_SECONDS)
    return probes


def trace_image(engine: Engine, image: str, options: TraceOptions, cache_dir: Path) -> Trace:
    """Trace one run of the image. Raises AppFailed (with the trace, when
    one was written) if the app did not behave."""
    attrs = engine.image_attrs(image)
    config = ImageConfig.from_inspect(attrs)
    argv = command_line(config, options.cmd, options.entrypoint)
    if not argv:
        raise SlimError(
            f"image {image!r} has no ENTRYPOINT or CMD",
            "give the command after --, e.g. slim trace IMAGE -- /usr/bin/app",
        )
    stop_signal = (
        parse_signal(options.stop_signal) if options.stop_signal else config.stop_signal_number()
    )
    user = options.user if options.user is not None else config.user
    run_config = RunConfig(
        mode=Mode.TRACE.value,
        argv=argv,
        env=config.env_dict(),
        workdir=config.workdir or "/",
        user=user,
        stop_signal=stop_signal,
        stop_timeout=options.stop_timeout,
    )
    http_plan = _http_probes(options, config)
    ports = sorted({port for _, port in http_plan} | set(config.tcp_ports()))
    bundle = sensor_bundle(cache_dir)
    seconds: dict[str, float] = {}
    probes: list[ProbeResult] = []
    failure: AppFailed | None = None
    started = time.monotonic()

    with sensor_container(
        engine, image, bundle, run_config, new_run_id(), ports=ports, echo_app=options.echo_app
    ) as sensor:
        try:
            sensor.wait_watching(timeout=120)
        except SensorError:
            status = engine.wait(sensor.container, 10)
            raise _sensor_failure(sensor, status) or SensorError(
                "the sensor did not start"
            ) from None
        seconds["setup"] = round(time.monotonic() - started, 3)

        if options.until_exit:
            log.info("waiting for %s to exit", argv[0])
            status = sensor.wait_exit(options.exit_timeout)
            if status is None:
                log.warning("no exit after %.0fs; stopping it", options.exit_timeout or 0)
                status = sensor.stop(stop_signal, options.stop_timeout)
        else:
            try:
                probes = _run_probes(engine, sensor, config, options, http_plan, user, seconds)
            except AppGone as exc:
                failure = AppFailed(
                    f"{argv[0]} exited at start: {exc.message}",
                    "its last output is above; the trace was saved",
                    None,
                )
            except NotReady as exc:
                failure = AppFailed(exc.message, exc.hint, None)
            seconds["probes"] = round(time.monotonic() - started - seconds["setup"], 3)
            status = (
                sensor.stop(stop_signal, options.stop_timeout)
                if sensor.running()
                else (engine.wait(sensor.container, 10))
            )

        sensor_error = _sensor_failure(sensor, status)
        if sensor_error is not None:
            raise sensor_error
        result = sensor.result()
        tail = sensor.app_output_tail()

    trace = Trace(
        image=image,
        image_id=str(attrs.get("Id", "")),
        config=config,
        command=argv,
        user=user,
        files=tuple(
            TracedFile(f["path"], f["kind"], tuple(f["access"])) for f in result.get("files", [])
        ),
        probes=tuple(probes),
        exit_status=result.get("exit", {}).get("status"),
        exit_signal=result.get("exit", {}).get("signal"),
        complete=not result.get("overflow", False),
        until_exit=options.until_exit,
        watches=int(result.get("watches", 0)),
        events=int(result.get("events", 0)),
        seconds={
            **seconds,
            "watch": float(result.get("setup_seconds", 0.0)),
            "total": round(time.monotonic() - started, 3),
        },
    )
    if failure is not None:
        failure.trace = trace
        if tail:
            failure.message += f"\n--- last output of the app ---\n{tail}"
        raise failure
    if options.until_exit and trace.exit_status not in (0, None):
        log.warning("%s exited with status %s", argv[0], trace.exit_status)
    if not trace.complete:
        log.warning("the inotify queue overflowed: the trace is incomplete (build needs --force)")
    return trace
