"""`slim verify`: run the fat and the micro image the same way, replay the
probes, and compare the answers. A micro image that answers differently is
worse than none, so the exit status says whether everything matched."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from slimmer.engine import Engine, new_run_id
from slimmer.errors import ExitCode, SlimError
from slimmer.probes import (
    HttpProbe,
    command_answer,
    http_answer,
    run_host_probe,
    split_command,
    wait_http_ready,
)
from slimmer.trace import ImageConfig, Trace, command_line

log = logging.getLogger(__name__)

DEFAULT_HEADERS = ("content-type", "content-length", "location", "content-encoding")


class VerifyFailed(SlimError):
    exit_code = ExitCode.FAILURE


@dataclass(frozen=True)
class VerifyPlan:
    http: tuple[HttpProbe, ...] = ()
    exec_commands: tuple[str, ...] = ()
    host_commands: tuple[str, ...] = ()
    until_exit: bool = False
    healthcheck: bool = False  # run each image's HEALTHCHECK command and compare
    command: list[str] | None = None  # None: the image's own ENTRYPOINT + CMD
    headers: tuple[str, ...] = DEFAULT_HEADERS
    ready_timeout: float = 30.0
    exit_timeout: float = 300.0
    host_env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Check:
    probe: str
    aspect: str
    fat: str
    micro: str

    @property
    def same(self) -> bool:
        return self.fat == self.micro


def plan_from_trace(trace: Trace, plan: VerifyPlan) -> VerifyPlan:
    """The trace's probes (unless probes were given) and its command."""
    http = plan.http or tuple(
        HttpProbe(p.spec["method"], p.spec["path"], p.spec["port"])
        for p in trace.probes
        if p.kind == "http"
    )
    exec_commands = plan.exec_commands or tuple(
        p.spec["command"] for p in trace.probes if p.kind == "exec"
    )
    host_commands = plan.host_commands or tuple(
        p.spec["command"] for p in trace.probes if p.kind == "host"
    )
    default = command_line(trace.config, None, None)
    command = plan.command or (trace.command if trace.command != default else None)
    return VerifyPlan(
        http=http,
        exec_commands=exec_commands,
        host_commands=host_commands,
        until_exit=plan.until_exit or trace.until_exit,
        healthcheck=plan.healthcheck or any(p.kind == "healthcheck" for p in trace.probes),
        command=command,
        headers=plan.headers,
        ready_timeout=plan.ready_timeout,
        exit_timeout=plan.exit_timeout,
        host_env=plan.host_env,
    )


def _probe_name(probe: HttpProbe, port: int) -> str:
    return f"{probe.method} {probe.path} :{port}"


def _run_options(plan: VerifyPlan) -> dict[str, Any]:
    return {"entrypoint": plan.command} if plan.command is not None else {}


def answers_of(engine: Engine, image: str, plan: VerifyPlan) -> dict[str, dict[str, Any]]:
    """Run one image and collect an answer per probe."""
    config = ImageConfig.from_inspect(engine.image_attrs(image))
    run_id = new_run_id()
    answers: dict[str, dict[str, Any]] = {}
    if plan.until_exit:
        code, out, err = engine.run_to_exit(
            image, None, run_id, timeout=plan.exit_timeout, **_run_options(plan)
        )
        answers["run"] = command_answer(code, out, err)
        return answers
    http = [
        (probe, port)
        for probe in plan.http
        for port in ([probe.port] if probe.port is not None else config.tcp_ports())
    ]
    ports = sorted({port for _, port in http} | set(config.tcp_ports()))
    host = engine.published_host
    with engine.container(
        image, run_id, ports=engine.publish(ports), **_run_options(plan)
    ) as container:
        container.start()

        def running() -> bool:
            return engine.is_running(container)

        host_ports = {port: engine.published_port(container, f"{port}/tcp")[1] for port in ports}
        for probe, port in http:
            try:
                wait_http_ready(host, host_ports[port], plan.ready_timeout, running, port)
            except SlimError as exc:
                answers[_probe_name(probe, port)] = {"error": exc.message}
                continue
            answers[_probe_name(probe, port)] = http_answer(
                host, host_ports[port], probe.method, probe.path
            )
        health = config.healthcheck_argv()
        if plan.healthcheck and health is not None:
            code, out, err = engine.exec_run(container, health, config.user or "0")
            answers["HEALTHCHECK"] = command_answer(code, out, err)
        for command in plan.exec_commands:
            code, out, err = engine.exec_run(container, split_command(command), config.user or "0")
            answers[f"exec {command}"] = command_answer(code, out, err)
        first = host_ports[ports[0]] if ports else None
        for command in plan.host_commands:
            answers[f"host {command}"] = run_host_probe(command, host, first, plan.host_env)
    return answers


def _short_hash(answer: Mapping[str, Any], key: str, size_key: str | None) -> str:
    digest = answer.get(key)
    if digest is None:
        return "-"
    size = f" {answer.get(size_key)}B" if size_key and size_key in answer else ""
    return f"sha256:{digest[:12]}{size}"


def compare_answers(
    fat: Mapping[str, Mapping[str, Any]],
    micro: Mapping[str, Mapping[str, Any]],
    headers: tuple[str, ...],
) -> list[Check]:
    checks: list[Check] = []
    for name in fat.keys() | micro.keys():
        a, b = fat.get(name, {"error": "not run"}), micro.get(name, {"error": "not run"})
        if "error" in a or "error" in b:
            checks.append(Check(name, "answer", a.get("error", "ok"), b.get("error", "ok")))
            continue
        if "status" in a or "status" in b:
            checks.append(Check(name, "status", str(a.get("status")), str(b.get("status"))))
            for header in headers:
                checks.append(
                    Check(
                        name,
                        f"header {header}",
                        str(a.get("headers", {}).get(header, "-")),
                        str(b.get("headers", {}).get(header, "-")),
                    )
                )
            checks.append(
                Check(
                    name,
                    "body",
                    _short_hash(a, "body_sha256", "body_size"),
                    _short_hash(b, "body_sha256", "body_size"),
                )
            )
        else:
            checks.append(
                Check(name, "exit code", str(a.get("exit_code")), str(b.get("exit_code")))
            )
            for stream in ("stdout", "stderr"):
                checks.append(
                    Check(
                        name,
                        stream,
                        _short_hash(a, f"{stream}_sha256", None),
                        _short_hash(b, f"{stream}_sha256", None),
                    )
                )
    return sorted(checks, key=lambda c: (c.probe, c.aspect))


def verify_images(
    engine: Engine, fat: str, micro: str, plan: VerifyPlan, progress: Callable[[str], None]
) -> tuple[list[Check], dict[str, float]]:
    if not (
        plan.until_exit or plan.http or plan.exec_commands or plan.host_commands or plan.healthcheck
    ):
        raise SlimError(
            "nothing to verify: no probes",
            "give --trace FILE (its probes are replayed), --http-probe, --probe-exec "
            "or --until-exit",
        )
    seconds: dict[str, float] = {}
    started = time.monotonic()
    progress(f"running {fat}")
    fat_answers = answers_of(engine, fat, plan)
    seconds["fat"] = round(time.monotonic() - started, 3)
    progress(f"running {micro}")
    micro_answers = answers_of(engine, micro, plan)
    seconds["micro"] = round(time.monotonic() - started - seconds["fat"], 3)
    return compare_answers(fat_answers, micro_answers, plan.headers), seconds


def render_checks(checks: list[Check], fat: str, micro: str, show_all: bool) -> list[str]:
    rows = [c for c in checks if show_all or not c.same]
    if not rows:
        return []
    widths = [
        max(len("probe"), *(len(c.probe) for c in rows)),
        max(len("aspect"), *(len(c.aspect) for c in rows)),
        max(len(fat), *(len(c.fat) for c in rows)),
        max(len(micro), *(len(c.micro) for c in rows)),
    ]
    lines = [
        "  ".join(h.ljust(w) for h, w in zip(("probe", "aspect", fat, micro), widths, strict=True))
        + "  "
    ]
    for check in rows:
        cells = (check.probe, check.aspect, check.fat, check.micro)
        mark = "same" if check.same else "DIFFERS"
        lines.append(
            "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + "  " + mark
        )
    return lines
