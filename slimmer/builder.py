"""`slim build`: from traces to the micro image.

A short-lived container of the fat image runs the sensor in collect mode:
it selects the files there (trace ∪ ELF closure ∪ includes − excludes, plus
links, parents, written dirs) and tars only those. The archive comes back
through the Engine API, is checked member by member, and becomes the
context's rootfs.tar; the Dockerfile carries the fat image's contract.
"""

from __future__ import annotations

import io
import logging
import re
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from slimmer import __version__, progress, wire
from slimmer.bundle import sensor_bundle
from slimmer.cleanup import scratch_directory, signals_held
from slimmer.context import ContextError, copy_validated, write_context
from slimmer.dockerfile import render_dockerfile
from slimmer.engine import Engine
from slimmer.errors import ExitCode, SlimError, UsageError
from slimmer.fileset import Selection, SelectionRequest, check_pattern
from slimmer.probes import ProbeRequest
from slimmer.protocol import (
    CollectJob,
    CollectResult,
    InventoryJob,
    InventoryResult,
)
from slimmer.report import BuildReport, build_report, human_size
from slimmer.rootfs import Kind
from slimmer.runner import SensorError, run_sensor_once, sensor_container
from slimmer.trace import (
    Access,
    ImageConfig,
    Lookup,
    Trace,
    TracedFile,
    default_trace_path,
    file_safe,
)
from slimmer.tracer import TraceOptions, trace_image
from slimmer.verify import VerifyOutcome, VerifyRequest, plan_from_trace, verify_images

log = logging.getLogger(__name__)

BASES = {"scratch": "scratch", "busybox": "busybox:latest"}
SOURCE_LABEL = "io.slim.source.image"
SOURCE_ID_LABEL = "io.slim.source.id"
VERSION_LABEL = "io.slim.version"
COLLECT_TIMEOUT = 600.0


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

    tag: str | None
    includes: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    base: str = "scratch"
    context_only: Path | None = None
    report: Path | None = None  # default .slim/<tag>.report.json
    force: bool = False
    runtime_extras: bool = True
    app_content: bool = True  # keep the rest of the app's own directories it read from
    traces: tuple[SavedTrace, ...] = ()  # given; default: the image's default trace, or trace first
    retrace: bool = False
    trace: TraceOptions = field(default_factory=TraceOptions)  # when build traces first
    verify: bool = False  # run verify on the fat and the micro image afterwards
    labels: dict[str, str] = field(default_factory=dict)  # --label: added by the builder
    platform: str | None = None  # --platform: must be the engine's own

    def __post_init__(self) -> None:
        if not self.tag and self.context_only is None:
            raise UsageError(
                "give the micro image a name with -t NAME[:TAG] (or use --context-only)"
            )
        if self.labels and self.context_only is not None:
            raise UsageError(
                "--label adds labels when slim builds; --context-only does not build",
                "give them to the build: docker build --label KEY=VALUE - < CONTEXT",
            )
        if self.platform is not None:
            parse_platform(self.platform)
        for pattern in self.includes:
            check_pattern(pattern, "--include")
        for pattern in self.excludes:
            check_pattern(pattern, "--exclude")

    def report_path(self, image: str) -> Path:
        return self.report or Path(".slim") / f"{file_safe(self.tag or image)}.report.json"


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


class CountingReader(io.RawIOBase):
    """Reads through to a stream and shows how much passed as a step's
    progress. `len` and `tell` give an HTTP body its Content-Length (requests
    sends len - tell)."""

    def __init__(self, inner: BinaryIO, step: progress.Step, total: int) -> None:
        self.inner = inner
        self.step = step
        self.total = total
        self.done = 0

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        data = self.inner.read(len(target))
        size = len(data)
        target[:size] = data
        self.done += size
        progress.update(self.step, self.done, self.total)
        return size

    def __len__(self) -> int:
        return self.total

    def tell(self) -> int:
        return self.done

    def __exit__(self, *exc: object) -> None:
        progress.finish(self.step)
        super().__exit__(*exc)


_BUILD_STEP = re.compile(r"^(?:Step|STEP) (\d+)/(\d+)\b")


def build_progress(line: str) -> None:
    """The builder's output: its steps as progress (Docker's `Step 2/9 :`,
    Podman's `STEP 2/9:`), every line in the debug log."""
    log.debug("%s", line)
    found = _BUILD_STEP.match(line)
    if found:
        progress.update(progress.BUILD, int(found.group(1)), int(found.group(2)))


@dataclass(frozen=True)
class BuildResult:
    tag: str | None
    micro_id: str | None
    fat_size: int
    micro_size: int | None
    selection: Selection
    report: BuildReport
    report_path: Path
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class BuildOutcome:
    """Everything `slim build` did: the trace it made first (if any), the
    build, and the verification (with --verify)."""

    traced: SavedTrace | None
    result: BuildResult
    verified: VerifyOutcome | None


def choose_traces(
    engine: Engine, image: str, options: BuildOptions, cache_dir: Path
) -> tuple[list[SavedTrace], SavedTrace | None]:
    """The traces a build uses: the given files; else the image's default
    trace when it is a trace of this very image; else a new trace, saved
    there. Returns them and the new trace, if one was made."""
    if options.traces:
        return list(options.traces), None
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
                return [SavedTrace(existing, default)], None
            log.info("%s is a trace of an older %s; tracing again", default, image)
    traced = trace_image(engine, image, options.trace, cache_dir)
    traced.save(default)
    saved = SavedTrace(traced, default)
    return [saved], saved


def build(engine: Engine, image: str, options: BuildOptions, cache_dir: Path) -> BuildOutcome:
    """`slim build`: choose or make the traces, build, verify if asked."""
    if options.platform is not None:
        check_platform(options.platform, engine.platform)  # before any container runs
    traces, made = choose_traces(engine, image, options, cache_dir)
    result = build_micro(engine, image, traces, options, cache_dir)
    verified = None
    if options.verify and options.tag and options.context_only is None:
        # Host commands run only when given on this command line, never from a trace file.
        given = ProbeRequest(
            hosts=options.trace.probes.hosts,
            host_env=options.trace.probes.host_env,
            default_get=False,
            healthcheck=False,
        )
        plan = plan_from_trace(traces[0].trace, VerifyRequest(probes=given))
        verified = verify_images(engine, image, options.tag, plan)
    return BuildOutcome(made, result, verified)


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


def _lookup_key(lookup: Lookup) -> tuple[str, str, bool, bool]:
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


def selection_request(
    traces: list[Trace], config: ImageConfig, options: BuildOptions, created: str | None = None
) -> SelectionRequest:
    entrypoints = [t.command[0] for t in traces if t.command]
    image_command = config.command()
    if image_command:
        entrypoints.append(image_command[0])
    return SelectionRequest(
        traced=merge_traced(traces),
        lookups=tuple(sorted({lookup for t in traces for lookup in t.lookups}, key=_lookup_key)),
        entrypoint=tuple(dict.fromkeys(entrypoints)),
        healthcheck=tuple((config.healthcheck_argv() or [])[:1]),
        includes=options.includes,
        excludes=options.excludes,
        env=config.env_dict(),
        workdir=config.workdir or "/",
        volumes=config.volumes,
        runtime_extras=options.runtime_extras,
        app_content=options.app_content,
        engine_mtime=created_epoch(created),
    )


def build_micro(
    engine: Engine,
    image: str,
    traces: list[SavedTrace],
    options: BuildOptions,
    cache_dir: Path,
) -> BuildResult:
    started = time.monotonic()
    seconds: dict[str, float] = {}
    if options.platform is not None:
        check_platform(options.platform, engine.platform)
    attrs = engine.image_attrs(image)
    image_id = str(attrs.get("Id", ""))
    used = [saved.trace for saved in traces]
    check_traces(used, image, image_id, options.force)
    config = engine.image_config(image, attrs)
    request = selection_request(used, config, options, attrs.get("Created"))
    base = BASES.get(options.base, options.base)
    labels = {SOURCE_LABEL: image, SOURCE_ID_LABEL: image_id, VERSION_LABEL: __version__}
    dockerfile = render_dockerfile(config, base, labels)  # refuses before any container
    if options.context_only is not None:
        dockerfile.check_self_contained()
    bundle = sensor_bundle(cache_dir)
    if base != "scratch":
        if not engine.image_exists(base):
            log.info("pulling the base image %s", base)
            engine.pull(base)
        inventory = run_sensor_once(engine, base, bundle, InventoryJob(), InventoryResult)
        request = replace(request, base_dirs=inventory.dir_paths)

    with scratch_directory("slim-build-") as scratch:
        rootfs_path = scratch / "rootfs.tar"
        log.info("collecting files in a container of %s", image)
        job = CollectJob(selection=request)
        with sensor_container(
            engine, image, bundle, job, engine.new_run_id(), workdir=request.workdir
        ) as sensor:
            if sensor.wait_exit(COLLECT_TIMEOUT) is None:
                raise SensorError(f"collecting files took longer than {COLLECT_TIMEOUT:.0f}s")
            progress.finish(progress.COLLECT)
            selection = sensor.result_of(CollectResult).selection
            file_bytes = sum(e.size for e in selection.entries if e.kind is Kind.FILE)
            try:
                with (
                    engine.open_file_stream(sensor.container, sensor.layout.output_tar) as stream,
                    rootfs_path.open("wb") as out,
                    CountingReader(stream, progress.COPY, file_bytes) as counted,
                ):
                    stats = copy_validated(counted, selection, out)
            except OSError as exc:
                error = ContextError(
                    f"cannot write {rootfs_path}: {exc.strerror}",
                    "free some space in TMPDIR, or point TMPDIR elsewhere",
                )
                error.exit_code = ExitCode.RESOURCE
                raise error from None
        seconds["collect"] = round(time.monotonic() - started, 3)
        log.info("selected %d paths, %s in files", stats.members, human_size(stats.file_bytes))
        for warning in selection.warnings:
            log.warning("%s", warning)

        context_path = options.context_only or scratch / "context.tar"
        try:
            with rootfs_path.open("rb") as rootfs, context_path.open("wb") as out:
                write_context(dockerfile.text, rootfs, rootfs_path.stat().st_size, out)
        except BaseException as exc:
            with signals_held():
                context_path.unlink(missing_ok=True)  # no half-written context is left
            if isinstance(exc, OSError):
                error = ContextError(
                    f"cannot write the build context {context_path}: {exc.strerror}",
                    "free some space, or point TMPDIR / --context-only elsewhere",
                )
                error.exit_code = ExitCode.RESOURCE
                raise error from None
            raise
        micro_id = micro_size = None
        if options.context_only is None and options.tag:
            log.info("building %s", options.tag)
            build_started = time.monotonic()
            size = context_path.stat().st_size
            with (
                context_path.open("rb") as context,
                CountingReader(context, progress.SEND, size) as counted,
            ):
                micro_id = engine.build(
                    counted,
                    options.tag,
                    labels={**dockerfile.labels, **options.labels},
                    build_args=dockerfile.build_args,
                    platform=options.platform,
                    progress=build_progress,
                )
            progress.finish(progress.BUILD)
            seconds["build"] = round(time.monotonic() - build_started, 3)
            micro_size = int(engine.image_attrs(micro_id).get("Size", 0))

    fat_size = int(attrs.get("Size", 0))
    seconds["total"] = round(time.monotonic() - started, 3)
    report = build_report(
        image=image,
        image_id=image_id,
        tag=options.tag,
        micro_id=micro_id,
        fat_size=fat_size,
        micro_size=micro_size,
        selection=selection,
        dockerfile_warnings=[
            f"the engine did not report the image's {name.upper()}: the micro image has none"
            for name in config.unreported
        ],
        traces=[str(saved.path) for saved in traces],
        seconds=seconds,
    )
    report_path = options.report_path(image)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(wire.dumps(report), encoding="ascii")
    return BuildResult(
        options.tag, micro_id, fat_size, micro_size, selection, report, report_path, seconds
    )
