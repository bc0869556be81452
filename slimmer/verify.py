"""`slim verify`: run the fat and the micro image the same way, replay the
probes, and compare the answers. A micro image that answers differently is
worse than none, so the outcome says whether everything matched."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from slimmer.engine import Engine
from slimmer.errors import CommandNotRunnable, ExitCode, SlimError
from slimmer.probes import ProbeRequest, command_answer, plan_probes, run_probes
from slimmer.trace import (
    Answer,
    ClientProbe,
    CommandAnswer,
    ExecProbe,
    HostProbe,
    HttpAnswer,
    HttpProbe,
    NoAnswer,
    Trace,
)

log = logging.getLogger(__name__)

VERIFY_SCHEMA = "slim.verify/1"
DEFAULT_HEADERS = ("content-type", "content-length", "location", "content-encoding")
DEFAULT_EXIT_TIMEOUT = 300.0
RUN_LABEL = "run"  # the name of a batch job's one answer


class VerifyFailed(SlimError):
    exit_code = ExitCode.FAILURE


@dataclass(frozen=True, kw_only=True)
class VerifyRequest:
    """What the user asked for on the command line; the rest comes from the
    trace (see plan_from_trace)."""

    probes: ProbeRequest = field(
        default_factory=lambda: ProbeRequest(default_get=False, healthcheck=False)
    )
    until_exit: bool = False
    headers: tuple[str, ...] = DEFAULT_HEADERS
    exit_timeout: float = DEFAULT_EXIT_TIMEOUT

    def gives_probes(self) -> bool:
        return self.probes.exercises() or self.until_exit


@dataclass(frozen=True, kw_only=True)
class VerifyPlan:
    probes: ProbeRequest
    until_exit: bool = False
    command: tuple[str, ...] | None = None  # None: the image's own ENTRYPOINT + CMD
    headers: tuple[str, ...] = DEFAULT_HEADERS
    exit_timeout: float = DEFAULT_EXIT_TIMEOUT

    def is_empty(self) -> bool:
        probes = self.probes
        return not (self.until_exit or probes.exercises() or probes.healthcheck)


def plan_from_request(request: VerifyRequest) -> VerifyPlan:
    return VerifyPlan(
        probes=request.probes,
        until_exit=request.until_exit,
        headers=request.headers,
        exit_timeout=request.exit_timeout,
    )


def plan_from_trace(trace: Trace, request: VerifyRequest) -> VerifyPlan:
    """The trace's probes (unless the request gives its own) and its command.

    A trace file is data: the host commands it names are never run. They
    run only when the user gives them again (--probe-host)."""
    given = request.probes
    recorded = [result.probe for result in trace.probes]
    recorded_hosts = [p for p in recorded if isinstance(p, HostProbe)]
    if recorded_hosts and not given.hosts:
        log.warning(
            "the trace names %d host command(s), which verify does not run from a trace file "
            "(give them with --probe-host): %s",
            len(recorded_hosts),
            "; ".join(repr(p.command) for p in recorded_hosts),
        )
    probes = replace(
        given,
        http=given.http or tuple(p for p in recorded if isinstance(p, HttpProbe)),
        execs=given.execs or tuple(p for p in recorded if isinstance(p, ExecProbe)),
        clients=given.clients or tuple(p for p in recorded if isinstance(p, ClientProbe)),
        hosts=given.hosts,
        healthcheck=given.healthcheck or any(p.KIND == "healthcheck" for p in recorded),
        default_get=False,
    )
    default = tuple(trace.config.command())
    return VerifyPlan(
        probes=probes,
        until_exit=request.until_exit or trace.until_exit,
        command=trace.command if trace.command != default else None,
        headers=request.headers,
        exit_timeout=request.exit_timeout,
    )


@dataclass(frozen=True)
class Check:
    probe: str
    aspect: str
    fat: str
    micro: str

    @property
    def same(self) -> bool:
        return self.fat == self.micro


@dataclass(frozen=True, kw_only=True)
class VerifyOutcome:
    """`slim verify --format json`: the two images (names as given, image
    ids, registry digests), every check and whether all matched."""

    schema: Literal["slim.verify/1"] = VERIFY_SCHEMA
    fat: str
    micro: str
    fat_id: str = ""
    micro_id: str = ""
    fat_digests: tuple[str, ...] = ()  # repo@sha256:..., where the image was pushed or pulled
    micro_digests: tuple[str, ...] = ()
    checks: tuple[Check, ...]
    same: bool
    seconds: dict[str, float]

    def differing(self) -> list[Check]:
        return [check for check in self.checks if not check.same]


def answers_of(
    engine: Engine,
    image: str,
    attrs: dict[str, Any],
    plan: VerifyPlan,
    client_image: str,
    *,
    reference: bool,
) -> dict[str, Answer]:
    """Run one image and collect an answer per probe; clients run in
    containers of `client_image` (the fat one). The reference (the fat
    image) must answer its HTTP probes: without its answers there is
    nothing to compare with. A container whose command cannot start gives
    that as every answer (a micro image that lost its entrypoint)."""
    config = engine.image_config(image, attrs)
    run_id = engine.new_run_id()
    entrypoint = list(plan.command) if plan.command is not None else None
    if plan.until_exit:
        try:
            code, out, err = engine.run_to_exit(
                image, None, run_id, timeout=plan.exit_timeout, entrypoint=entrypoint
            )
        except CommandNotRunnable as exc:
            if reference:
                raise
            return {RUN_LABEL: NoAnswer(exc.message)}
        return {RUN_LABEL: command_answer(code, out, err)}
    probe_plan = plan_probes(plan.probes, config, config.user, client_image)
    with engine.container(
        image, run_id, ports=probe_plan.ports(config), entrypoint=entrypoint
    ) as container:
        try:
            engine.start(container)
        except CommandNotRunnable as exc:
            if reference:
                raise
            return {probe.label(): NoAnswer(exc.message) for probe in probe_plan.probes()}
        run = run_probes(
            engine,
            container,
            probe_plan,
            still_running=lambda: engine.is_running(container),
            must_answer=reference,
        )
    return {result.probe.label(): result.answer for result in run.results}


def _short_hash(digest: str, size: int | None) -> str:
    return f"sha256:{digest[:12]}" + (f" {size}B" if size is not None else "")


def compare_answers(
    fat: Mapping[str, Answer], micro: Mapping[str, Answer], headers: tuple[str, ...]
) -> list[Check]:
    checks: list[Check] = []
    missing = NoAnswer("not run")
    for name in fat.keys() | micro.keys():
        a, b = fat.get(name, missing), micro.get(name, missing)
        if isinstance(a, NoAnswer) or isinstance(b, NoAnswer):
            checks.append(Check(name, "answer", _outcome(a), _outcome(b)))
        elif type(a) is not type(b):
            checks.append(Check(name, "answer", f"{a.KIND} answer", f"{b.KIND} answer"))
        elif isinstance(a, HttpAnswer) and isinstance(b, HttpAnswer):
            checks.append(Check(name, "status", str(a.status), str(b.status)))
            checks.extend(
                Check(name, f"header {h}", a.headers.get(h, "-"), b.headers.get(h, "-"))
                for h in headers
            )
            checks.append(
                Check(
                    name,
                    "body",
                    _short_hash(a.body_sha256, a.body_size),
                    _short_hash(b.body_sha256, b.body_size),
                )
            )
        elif isinstance(a, CommandAnswer) and isinstance(b, CommandAnswer):
            checks.append(Check(name, "exit code", str(a.exit_code), str(b.exit_code)))
            checks.append(
                Check(
                    name,
                    "stdout",
                    _short_hash(a.stdout_sha256, None),
                    _short_hash(b.stdout_sha256, None),
                )
            )
            checks.append(
                Check(
                    name,
                    "stderr",
                    _short_hash(a.stderr_sha256, None),
                    _short_hash(b.stderr_sha256, None),
                )
            )
    return sorted(checks, key=lambda c: (c.probe, c.aspect))


def _outcome(answer: Answer) -> str:
    return answer.error if isinstance(answer, NoAnswer) else "ok"


def verify_images(engine: Engine, fat: str, micro: str, plan: VerifyPlan) -> VerifyOutcome:
    if plan.is_empty():
        raise SlimError(
            "nothing to verify: no probes",
            "give --trace FILE (its probes are replayed), --http-probe, --probe-exec "
            "or --until-exit",
        )
    seconds: dict[str, float] = {}
    started = time.monotonic()
    fat_attrs, micro_attrs = engine.image_attrs(fat), engine.image_attrs(micro)
    log.info("running %s", fat)
    fat_answers = answers_of(engine, fat, fat_attrs, plan, fat, reference=True)
    seconds["fat"] = round(time.monotonic() - started, 3)
    log.info("running %s", micro)
    micro_answers = answers_of(engine, micro, micro_attrs, plan, fat, reference=False)
    seconds["micro"] = round(time.monotonic() - started - seconds["fat"], 3)
    checks = tuple(compare_answers(fat_answers, micro_answers, plan.headers))
    return VerifyOutcome(
        fat=fat,
        micro=micro,
        fat_id=str(fat_attrs.get("Id") or ""),
        micro_id=str(micro_attrs.get("Id") or ""),
        fat_digests=tuple(str(d) for d in fat_attrs.get("RepoDigests") or ()),
        micro_digests=tuple(str(d) for d in micro_attrs.get("RepoDigests") or ()),
        checks=checks,
        same=all(check.same for check in checks),
        seconds=seconds,
    )


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


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(outcome: VerifyOutcome, show_all: bool) -> list[str]:
    """The checks as a markdown table and a verdict, for a CI job summary."""
    fat, micro = outcome.fat, outcome.micro
    rows = [c for c in outcome.checks if show_all or not c.same]
    lines = [f"### slim verify: `{_cell(fat)}` and `{_cell(micro)}`", ""]
    if rows:
        lines += [
            f"| probe | aspect | {_cell(fat)} | {_cell(micro)} | |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {_cell(c.probe)} | {_cell(c.aspect)} | {_cell(c.fat)} | {_cell(c.micro)} | "
            + ("same" if c.same else "**differs**")
            + " |"
            for c in rows
        ]
        lines.append("")
    differing = len(outcome.differing())
    if differing:
        lines.append(f"**verify failed:** {differing} of {len(outcome.checks)} checks differ")
    else:
        lines.append(f"verify passed: {len(outcome.checks)} checks, the answers are the same")
    return lines
