"""`slim build`: its options, the traces it uses (the given ones, the
image's saved trace, or a new trace whose container can stay for the
collect), and the flow: slimmer.assemble makes the micro image, slimmer.
verify checks it with --verify. This module loads only what the command
needs before its first line; the rest loads when the image is made.
"""

from __future__ import annotations

import logging
import re
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from slimmer.datasets import DATA_SET_NAMES
from slimmer.delivery import OutputSpec, check_delivery
from slimmer.errors import ExitCode, SlimError, UsageError
from slimmer.patterns import check_pattern
from slimmer.probes import ProbeRequest
from slimmer.sbom import SbomFormat
from slimmer.trace import Access, Lookup, Trace, TracedFile, default_trace_path, file_safe
from slimmer.tracer import TraceOptions, tracing

if TYPE_CHECKING:
    from slimmer.assemble import BuildResult
    from slimmer.engine import Engine
    from slimmer.runner import SensorContainer
    from slimmer.verify import VerifyOutcome

log = logging.getLogger(__name__)


class StaleTrace(SlimError):
    """A trace that does not fit the image being built."""

    exit_code = ExitCode.STALE_TRACE


@dataclass(frozen=True)
class SavedTrace:
    """A trace and the file it was read from (or saved to)."""

    trace: Trace
    path: Path

    @classmethod
    def load(cls, path: Path) -> SavedTrace:
        return cls(Trace.load(path), path)


@dataclass(frozen=True, kw_only=True)
class BuildOptions:
    """What to build and from which traces. Patterns are checked when the
    options are made, before any container starts."""

    tags: tuple[str, ...] = ()  # -t, each applied; the first names the report and SBOM
    includes: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    base: str = "scratch"
    context_only: Path | None = None
    report: Path | None = None  # default .slim/<tag>.report.json
    force: bool = False
    runtime_extras: bool = True
    app_content: bool = True  # keep the app's own files beside and below what it read
    program_siblings: bool = True  # keep the other programs of a folder of programs it ran
    code_closure: bool = True  # keep what interpreted code imports, requires or runs
    keep_data: tuple[str, ...] = DATA_SET_NAMES  # keyed data sets kept when one member is read
    traces: tuple[SavedTrace, ...] = ()  # given; default: the image's default trace, or trace first
    retrace: bool = False
    trace: TraceOptions = field(default_factory=TraceOptions)  # when build traces first
    verify: bool = False  # run verify on the fat and the micro image afterwards
    layers: bool = True  # split by update risk (slimmer.layers); False: one layer
    package_records: bool = True  # records of the kept OS packages, for scanners
    strip: bool = False  # drop debug sections and symbol tables of kept ELF files
    strip_except: tuple[str, ...] = ()  # globs of files --strip leaves alone
    init: bool = False  # an init as PID 1 in front of the app
    sbom: Path | None = None  # default .slim/<tag>.sbom.json (.spdx.json)
    sbom_format: SbomFormat = SbomFormat.CYCLONEDX
    labels: dict[str, str] = field(default_factory=dict)  # --label: added by the builder
    platform: str | None = None  # --platform: must be the engine's own
    push: bool = False  # push every tag to its registry
    outputs: tuple[OutputSpec, ...] = ()  # --output oci:DIR, docker-archive:FILE
    iidfile: Path | None = None  # where to write the image id

    def __post_init__(self) -> None:
        if not self.tags and self.context_only is None:
            raise UsageError(
                "give the micro image a name with -t NAME[:TAG] (or use --context-only)"
            )
        for tag in self.tags:
            check_reference(tag, "-t")
        if self.labels and self.context_only is not None:
            raise UsageError(
                "--label adds labels when slim builds; --context-only does not build",
                "give them to the build: docker build --label KEY=VALUE - < CONTEXT",
            )
        if self.platform is not None:
            parse_platform(self.platform)
        delivered = self.push or self.outputs or self.iidfile is not None
        if delivered and self.context_only is not None:
            raise UsageError(
                "--push, --output and --iidfile need an image; --context-only does not build",
                "leave out --context-only",
            )
        for output in self.outputs:
            check_delivery(output)
        for pattern in self.includes:
            check_pattern(pattern, "--include")
        for pattern in self.excludes:
            check_pattern(pattern, "--exclude")
        for pattern in self.strip_except:
            check_pattern(pattern, "--strip-except")
        if self.strip_except and not self.strip:
            raise UsageError("--strip-except is for --strip", "add --strip, or leave it out")

    @property
    def tag(self) -> str | None:
        """The micro image's first name (-t), which names its report."""
        return self.tags[0] if self.tags else None

    def report_path(self, image: str) -> Path:
        return self.report or Path(".slim") / f"{file_safe(self.tag or image)}.report.json"

    def sbom_path(self, image: str) -> Path:
        suffix = self.sbom_format.suffix
        return self.sbom or Path(".slim") / f"{file_safe(self.tag or image)}{suffix}"


# An image reference as docker's reference grammar has it: [host[:port]/]path[:tag][@digest].
_REFERENCE = re.compile(
    r"(?:(?P<host>[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*"
    r"[A-Za-z0-9])?)*(?::[0-9]+)?)/)?"
    r"(?P<path>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
)
MAX_NAME = 255


def check_reference(text: str, option: str) -> None:
    """Refuse, before any container starts, a name the engine would refuse
    after all the work: `-t 'bad tag!!'`. A host part is only taken as one
    when the name has more than one component, as docker does."""
    found = _REFERENCE.fullmatch(text)
    if found and found.group("host") and "/" not in text:
        found = None
    if not found or len(text) - len(found.group("tag") or "") > MAX_NAME:
        raise UsageError(
            f"{option} {text!r} is not a valid image name",
            "use lowercase NAME[:TAG], e.g. -t app:micro or -t registry:5000/team/app:1.2",
        )


# The names Go (and so the engines) give CPUs that uname and Debian name otherwise.
_ARCH_NAMES = {
    "x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm",
    "armel": "arm", "i386": "386", "i686": "386", "ppc64el": "ppc64le",
}  # fmt: skip
_PLATFORM = re.compile(r"([a-z0-9]+)(?:/([a-z0-9_-]+)(?:/([a-z0-9]+))?)?")


def parse_platform(text: str) -> tuple[str, str | None, str | None]:
    """`os[/arch[/variant]]` (linux/arm64/v8), architecture names normalised
    as the engines name them."""
    found = _PLATFORM.fullmatch(text.strip().lower())
    if not found:
        raise UsageError(
            f"--platform {text!r} is not os[/arch[/variant]]", "e.g. --platform linux/amd64"
        )
    os_name, arch, variant = found.groups()
    return os_name, _ARCH_NAMES.get(arch or "", arch), variant


def check_platform(requested: str, native: str) -> None:
    """slim runs the app on the engine to trace it and builds the micro image
    from the fat image's files there: it makes images of the engine's own
    platform only. A variant (linux/arm64/v8) is the engine's to judge."""
    want_os, want_arch, _ = parse_platform(requested)
    have_os, have_arch, _ = parse_platform(native)
    if want_os != have_os or (want_arch is not None and want_arch != have_arch):
        raise UsageError(
            f"--platform {requested}: the engine runs {native} images, and slim builds only "
            "for the engine's own platform (it runs the app to trace it; no emulation)",
            f"use an engine on a {requested} machine (-H/--host, --context)",
        )


@dataclass(frozen=True)
class BuildOutcome:
    """Everything `slim build` did: the trace it made first (if any), the
    build, and the verification (with --verify)."""

    traced: SavedTrace | None
    result: BuildResult
    verified: VerifyOutcome | None


@dataclass(frozen=True)
class ChosenTraces:
    """The traces a build uses, the one it made first (if any), and the
    container that trace ran in when the collect can run there."""

    traces: list[SavedTrace]
    made: SavedTrace | None = None
    collector: SensorContainer | None = None


def choose_traces(
    engine: Engine, image: str, options: BuildOptions, cache_dir: Path, stack: ExitStack
) -> ChosenTraces:
    """The traces a build uses: the given files; else the image's default
    trace when it is a trace of this very image; else a new trace, saved
    there, whose container stays (in `stack`) for the collect when it can
    stand for the image."""
    if options.traces:
        return ChosenTraces(list(options.traces))
    default = default_trace_path(image)
    if not options.retrace and default.exists():
        image_id = engine.image_attrs(image).get("Id")
        try:
            existing = Trace.load(default)
        except SlimError as exc:
            log.info("%s cannot be used (%s); tracing again", default, exc.message)
        else:
            if existing.image_id == image_id:
                log.info("using the trace %s (--retrace to trace again)", default)
                return ChosenTraces([SavedTrace(existing, default)])
            log.info("%s is a trace of an older %s; tracing again", default, image)
    run = stack.enter_context(tracing(engine, image, options.trace, cache_dir, await_collect=True))
    run.trace.save(default)
    saved = SavedTrace(run.trace, default)
    if run.collector is None:
        log.info("%s: the files are collected in a fresh container", run.not_intact)
    return ChosenTraces([saved], saved, run.collector)


def build(engine: Engine, image: str, options: BuildOptions, cache_dir: Path) -> BuildOutcome:
    """`slim build`: choose or make the traces, build, verify if asked."""
    if options.platform is not None:
        check_platform(options.platform, engine.platform)  # before any container runs
    with ExitStack() as stack:
        chosen = choose_traces(engine, image, options, cache_dir, stack)
        traces = chosen.traces
        from slimmer.assemble import build_micro  # the rest of the command's code, now

        result = build_micro(engine, image, traces, options, cache_dir, chosen.collector)
    verified = None
    if options.verify and options.tag and options.context_only is None:
        # Host commands run only when given on this command line, never from a trace file.
        given = ProbeRequest(
            hosts=options.trace.probes.hosts,
            host_env=options.trace.probes.host_env,
            default_get=False,
            healthcheck=False,
        )
        from slimmer.verify import VerifyRequest, plan_from_trace, verify_images

        plan = plan_from_trace(traces[0].trace, VerifyRequest(probes=given))
        verified = verify_images(engine, image, options.tag, plan)
    return BuildOutcome(chosen.made, result, verified)


def merge_traced(traces: list[Trace]) -> tuple[TracedFile, ...]:
    """The union of the traces' files, accesses merged."""
    merged: dict[str, set[Access]] = {}
    kinds: dict[str, TracedFile] = {}
    for trace in traces:
        for traced in trace.files:
            merged.setdefault(traced.path, set()).update(traced.access)
            kinds.setdefault(traced.path, traced)
    return tuple(
        TracedFile(path, kinds[path].kind, tuple(sorted(access)))
        for path, access in sorted(merged.items())
    )


def lookup_key(lookup: Lookup) -> tuple[str, str, bool, bool]:
    return (lookup.path, lookup.action.value, lookup.follow, lookup.existed)


def check_traces(traces: list[Trace], image: str, image_id: str, force: bool) -> None:
    for trace in traces:
        if trace.image_id and trace.image_id != image_id:
            message = (
                f"the trace of {trace.image} ({trace.image_id[:19]}) "
                f"is not of {image} ({image_id[:19]})"
            )
            if not force:
                raise StaleTrace(
                    message, "trace this image again, or pass --force to use it anyway"
                )
            log.warning("%s; used anyway (--force)", message)
        if not trace.complete:
            why = trace.problems[0].splitlines()[0] if trace.problems else "no reason recorded"
            message = f"the trace of {trace.image} is {trace.status.value} ({why})"
            if not force:
                raise StaleTrace(message, "trace again (build --retrace), or pass --force")
            log.warning("%s; used anyway (--force)", message)


def created_epoch(created: str | None) -> int | None:
    """The image's creation time (RFC 3339, nanoseconds) as epoch seconds;
    None when it is missing, unreadable, or not after 1970 (the engine shows
    a missing one as year 1)."""
    if not created:
        return None
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?$", created)
    if not match:
        return None
    zone = match.group(3) or "Z"
    try:
        moment = datetime.fromisoformat(match.group(1) + ("+00:00" if zone == "Z" else zone))
    except ValueError:
        return None
    epoch = int(moment.timestamp())
    return epoch if epoch > 0 else None
