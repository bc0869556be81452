"""`slim verify`: run the fat and the micro image the same way, replay the
probes, and compare what the engine itself observes: the answers, the
health status the engine gives each container, whether the app is still
running after the probes. A micro image that answers differently is worse
than none, so the outcome says whether everything matched; and a fat image
that does not answer its probes as expected is an error (exit 6), never a
"same": two failures prove nothing."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, NoReturn

from slimmer.errors import CommandNotRunnable, ExitCode, SlimError
from slimmer.probes import (
    AppGone,
    ProbePlan,
    ProbeRequest,
    answer_text,
    command_answer,
    plan_probes,
    run_probes,
    unexpected_text,
)
from slimmer.trace import (
    Answer,
    ClientProbe,
    CommandAnswer,
    ExecProbe,
    Healthcheck,
    HostProbe,
    HttpAnswer,
    HttpProbe,
    ImageConfig,
    NoAnswer,
    Trace,
)

if TYPE_CHECKING:
    from slimmer.engine import ContainerRef, Engine, HealthState

log = logging.getLogger(__name__)

VERIFY_SCHEMA = "slim.verify/1"
DEFAULT_HEADERS = ("content-type", "content-length", "location", "content-encoding")
DEFAULT_EXIT_TIMEOUT = 300.0
RUN_LABEL = "run"  # the name of a batch job's one answer
APP_LABEL = "app"  # the checks of the app's own state
HEALTH_LABEL = "HEALTHCHECK"
HEALTH_INTERVAL_NS = 1_000_000_000  # verify runs the image's check every second
HEALTH_POLL_SECONDS = 0.5
LOG_LINES_SHOWN = 15
HEALTHY, UNHEALTHY = "healthy", "unhealthy"


class VerifyFailed(SlimError):
    exit_code = ExitCode.FAILURE


class ReferenceFailed(SlimError):
    """The fat image did not behave as its trace (or the probes) expect:
    there is nothing trustworthy to compare the micro image with."""

    exit_code = ExitCode.APP


@dataclass(frozen=True, kw_only=True)
class VerifyRequest:
    """What the user asked for on the command line; the rest comes from the
    trace (see plan_from_trace) or, without one, the defaults of a trace."""

    probes: ProbeRequest = field(
        default_factory=lambda: ProbeRequest(default_get=False, healthcheck=False)
    )
    until_exit: bool = False
    expect_exit: int = 0
    headers: tuple[str, ...] = DEFAULT_HEADERS
    exit_timeout: float = DEFAULT_EXIT_TIMEOUT

    def gives_probes(self) -> bool:
        return self.probes.exercises() or self.until_exit


@dataclass(frozen=True, kw_only=True)
class VerifyPlan:
    probes: ProbeRequest
    until_exit: bool = False
    expect_exit: int = 0  # a batch job's status on the fat image
    command: tuple[str, ...] | None = None  # None: the image's own ENTRYPOINT + CMD
    headers: tuple[str, ...] = DEFAULT_HEADERS
    exit_timeout: float = DEFAULT_EXIT_TIMEOUT


def plan_from_request(request: VerifyRequest) -> VerifyPlan:
    """The probes given on the command line; none given, the ones a trace
    makes by default (GET / on each exposed TCP port, the HEALTHCHECK)."""
    probes = request.probes
    if not request.gives_probes():
        probes = replace(probes, default_get=True, healthcheck=True)
    return VerifyPlan(
        probes=probes,
        until_exit=request.until_exit,
        expect_exit=request.expect_exit,
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
        expect_exit=request.expect_exit if request.until_exit else trace.expect_exit,
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
    ids, registry digests), every check and whether all matched, and what
    slim noticed on the way (the micro image's app exited, with its output)."""

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
    notes: tuple[str, ...] = ()

    def differing(self) -> list[Check]:
        return [check for check in self.checks if not check.same]


@dataclass(frozen=True)
class ImageRun:
    """What one image did under verify: an answer per probe, the facts the
    engine reports (health status, whether the app still runs), how long it
    took to become healthy, and the end of its output when it ended."""

    answers: dict[str, Answer]
    facts: dict[str, str] = field(default_factory=dict)  # aspect -> what the engine said
    healthy_after: float | None = None
    exit_note: str | None = None


def verify_healthcheck(config: ImageConfig) -> Healthcheck | None:
    """The image's HEALTHCHECK as verify runs it: the same test, timeout,
    retries and start period, run every second (an image's interval may be
    30 s) so the engine says healthy or unhealthy within the probes' time."""
    if config.healthcheck is None or not config.has_healthcheck():
        return None
    interval = config.healthcheck.interval or 30 * HEALTH_INTERVAL_NS
    return replace(config.healthcheck, interval=min(interval, HEALTH_INTERVAL_NS))


def wait_health(
    engine: Engine,
    container: ContainerRef,
    deadline: float,
    give_up_unhealthy_after: float | None,
) -> tuple[HealthState, float]:
    """Wait until the engine calls the container healthy, or until the
    deadline. An unhealthy container may still become healthy (the engine
    keeps running its check); a candidate gives up on it after
    `give_up_unhealthy_after` seconds. Returns the last state and the
    seconds waited."""
    started = time.monotonic()
    while True:
        state = engine.health(container)
        waited = time.monotonic() - started
        if state.status == HEALTHY:
            return state, waited
        if engine.exit_status(container) is not None or time.monotonic() >= deadline:
            return state, waited
        if (
            state.status == UNHEALTHY
            and give_up_unhealthy_after is not None
            and waited >= give_up_unhealthy_after
        ):
            return state, waited
        time.sleep(HEALTH_POLL_SECONDS)


def _tail(engine: Engine, container: ContainerRef) -> str:
    text = engine.logs(container).decode("utf-8", "replace")
    return "\n".join(text.rstrip().splitlines()[-LOG_LINES_SHOWN:])


def _exit_note(image: str, engine: Engine, container: ContainerRef, status: int) -> str:
    tail = _tail(engine, container)
    note = f"{image}: the app exited with status {status}"
    return note + (f"; its last output:\n{tail}" if tail else " and wrote nothing")


def answers_of(
    engine: Engine,
    image: str,
    attrs: dict[str, Any],
    plan: VerifyPlan,
    client_image: str,
    *,
    reference: ImageRun | None,
) -> ImageRun:
    """Run one image and collect an answer per probe and the engine's facts;
    clients run in containers of `client_image` (the fat one). `reference`
    is None for the fat image, which must answer its probes as they expect
    (ReferenceFailed otherwise: there is nothing to compare with); for the
    micro image it is the fat image's run. A container whose command cannot
    start gives that as every answer (a micro image that lost its
    entrypoint)."""
    config = engine.image_config(image, attrs)
    run_id = engine.new_run_id()
    entrypoint = list(plan.command) if plan.command is not None else None
    if plan.until_exit:
        return _job_run(engine, image, plan, run_id, entrypoint, reference is None)
    probe_plan = plan_probes(plan.probes, config, config.user, client_image)
    healthcheck = verify_healthcheck(config)
    if not probe_plan.probes() and healthcheck is None:
        raise SlimError(
            f"nothing to verify: {image} exposes no TCP port and has no HEALTHCHECK, and no "
            "probe was given",
            "give --trace FILE (its probes are replayed), --http-probe, --probe-exec, "
            "--probe-client, or --until-exit for a batch job",
        )
    with engine.container(
        image,
        run_id,
        ports=probe_plan.ports(),
        entrypoint=entrypoint,
        healthcheck=healthcheck,
    ) as container:
        try:
            engine.start(container)
        except CommandNotRunnable as exc:
            if reference is None:
                raise
            answers: dict[str, Answer] = {
                probe.label(): NoAnswer(exc.message) for probe in probe_plan.probes()
            }
            facts = {"running after the probes": "did not start"}
            if healthcheck is not None:
                facts["health status"] = "did not start"
            return ImageRun(answers, facts, exit_note=f"{image}: {exc.message}")
        return _probed_run(engine, image, container, probe_plan, healthcheck, reference)


def _probed_run(
    engine: Engine,
    image: str,
    container: ContainerRef,
    probe_plan: ProbePlan,
    healthcheck: Healthcheck | None,
    reference: ImageRun | None,
) -> ImageRun:
    facts: dict[str, str] = {}
    healthy_after = None

    def still_running() -> bool:
        return engine.is_running(container)

    if healthcheck is not None:
        patience = probe_plan.healthcheck_patience
        give_up = None
        if reference is not None and reference.healthy_after is not None:
            give_up = 2 * reference.healthy_after + 5
        state, waited = wait_health(
            engine, container, time.monotonic() + patience, give_up_unhealthy_after=give_up
        )
        facts["health status"] = state.status or "none"
        if state.status == HEALTHY:
            healthy_after = waited
        elif reference is None:
            _reference_failed(
                engine,
                image,
                container,
                f"{image} did not become healthy within {patience:.0f}s (the engine says "
                f"{state.status or 'nothing'}; the last check exited {state.last_exit}: "
                f"{state.last_output.strip()[-300:] or 'no output'})",
            )
    try:
        run = run_probes(
            engine,
            container,
            probe_plan,
            still_running=still_running,
            must_answer=reference is None,
            retry_healthcheck=False,
        )
    except AppGone as exc:
        _reference_failed(engine, image, container, f"the app of {image} exited, {exc.message}")
    if reference is None and run.unexpected():
        raise ReferenceFailed(
            unexpected_text(run.unexpected(), image),
            "verify compares the micro image with a fat image that answers as the probes "
            "expect; fix the probe (or mark an expected failure with !), or trace again",
        )
    status = engine.exit_status(container)
    facts["running after the probes"] = (
        "running" if status is None else f"exited with status {status}"
    )
    note = _exit_note(image, engine, container, status) if status is not None else None
    answers = {result.probe.label(): result.answer for result in run.results}
    return ImageRun(answers, facts, healthy_after, note)


def _reference_failed(
    engine: Engine, image: str, container: ContainerRef, message: str
) -> NoReturn:
    status = engine.exit_status(container)
    if status is not None:
        message = _exit_note(image, engine, container, status)
    raise ReferenceFailed(
        message,
        "the fat image must answer before the micro image can be compared with it; "
        "check it with docker run, or give the probes that it answers",
    )


def _job_run(
    engine: Engine,
    image: str,
    plan: VerifyPlan,
    run_id: str,
    entrypoint: list[str] | None,
    is_reference: bool,
) -> ImageRun:
    """A batch job run to its end: its exit code and output are the answer.
    The fat image's job must end with the status the trace expects."""
    try:
        code, out, err = engine.run_to_exit(
            image, None, run_id, timeout=plan.exit_timeout, entrypoint=entrypoint
        )
    except CommandNotRunnable as exc:
        if is_reference:
            raise
        return ImageRun({RUN_LABEL: NoAnswer(exc.message)})
    answer = command_answer(code, out, err)
    if is_reference and code != plan.expect_exit:
        raise ReferenceFailed(
            f"the job of {image} exited with status {code} (expected {plan.expect_exit}): "
            + answer_text(answer),
            "verify compares the micro image with a fat image whose job succeeds; "
            f"if status {code} is what it should end with, give --expect-exit {code}",
        )
    return ImageRun({RUN_LABEL: answer})


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


def compare_facts(fat: Mapping[str, str], micro: Mapping[str, str]) -> list[Check]:
    """The engine's facts of both runs: health status, the app's state."""
    label = {"health status": HEALTH_LABEL}
    return sorted(
        (
            Check(
                label.get(aspect, APP_LABEL), aspect, fat.get(aspect, "-"), micro.get(aspect, "-")
            )
            for aspect in fat.keys() | micro.keys()
        ),
        key=lambda c: (c.probe, c.aspect),
    )


def _outcome(answer: Answer) -> str:
    return answer.error if isinstance(answer, NoAnswer) else "ok"


def verify_images(engine: Engine, fat: str, micro: str, plan: VerifyPlan) -> VerifyOutcome:
    seconds: dict[str, float] = {}
    started = time.monotonic()
    fat_attrs, micro_attrs = engine.image_attrs(fat), engine.image_attrs(micro)
    log.info("running %s", fat)
    fat_run = answers_of(engine, fat, fat_attrs, plan, fat, reference=None)
    seconds["fat"] = round(time.monotonic() - started, 3)
    log.info("running %s", micro)
    micro_run = answers_of(engine, micro, micro_attrs, plan, fat, reference=fat_run)
    seconds["micro"] = round(time.monotonic() - started - seconds["fat"], 3)
    checks = (
        *compare_answers(fat_run.answers, micro_run.answers, plan.headers),
        *compare_facts(fat_run.facts, micro_run.facts),
    )
    notes = tuple(note for note in (micro_run.exit_note,) if note)
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
        notes=notes,
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
