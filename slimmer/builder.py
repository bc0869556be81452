"""`slim build`: from traces to the micro image.

A short-lived container of the fat image runs the sensor in collect mode:
it selects the files there (trace ∪ ELF closure ∪ includes − excludes, plus
links, parents, written dirs) and tars only those. The archive comes back
through the Engine API, is checked member by member, and becomes the
context's rootfs.tar; the Dockerfile carries the fat image's contract.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from slimmer import __version__
from slimmer.bundle import sensor_bundle
from slimmer.context import ContextError, copy_validated, render_dockerfile, write_context
from slimmer.engine import Engine, new_run_id
from slimmer.errors import ExitCode, SlimError
from slimmer.fileset import Selection, SelectionRequest, check_pattern
from slimmer.report import build_report, human_size
from slimmer.runner import SensorError, run_sensor_once, sensor_container
from slimmer.sensor.protocol import OUTPUT_TAR, Mode, RunConfig
from slimmer.trace import ImageConfig, Trace

log = logging.getLogger(__name__)

BASES = {"scratch": "scratch", "busybox": "busybox:latest"}
SOURCE_LABEL = "io.slim.source.image"
SOURCE_ID_LABEL = "io.slim.source.id"
VERSION_LABEL = "io.slim.version"


class StaleTrace(SlimError):
    """A trace that does not fit the image being built."""

    exit_code = ExitCode.STALE_TRACE


@dataclass(frozen=True)
class BuildOptions:
    tag: str | None
    includes: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    base: str = "scratch"
    context_only: Path | None = None
    report: Path | None = None
    force: bool = False
    runtime_extras: bool = True


@dataclass
class BuildResult:
    tag: str | None
    micro_id: str | None
    fat_size: int
    micro_size: int | None
    selection: Selection
    report: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)


def merge_traced(traces: list[Trace]) -> list[dict[str, Any]]:
    """The union of the traces' files, accesses merged."""
    merged: dict[str, set[str]] = {}
    kinds: dict[str, str] = {}
    for trace in traces:
        for traced in trace.files:
            merged.setdefault(traced.path, set()).update(traced.access)
            kinds.setdefault(traced.path, traced.kind)
    return [
        {"path": path, "access": sorted(access), "kind": kinds[path]}
        for path, access in sorted(merged.items())
    ]


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
            message = f"the trace of {trace.image} is incomplete (the inotify queue overflowed)"
            if not force:
                raise StaleTrace(message, "trace again with less load, or pass --force")
            log.warning("%s; used anyway (--force)", message)


def created_epoch(created: str | None) -> int | None:
    """The image's creation time (RFC 3339, nanoseconds) as epoch seconds."""
    if not created:
        return None
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?$", created)
    if not match:
        return None
    zone = match.group(3) or "Z"
    moment = datetime.fromisoformat(match.group(1) + ("+00:00" if zone == "Z" else zone))
    return int(moment.timestamp())


def selection_request(
    traces: list[Trace], config: ImageConfig, options: BuildOptions, created: str | None = None
) -> SelectionRequest:
    for pattern in options.includes:
        check_pattern(pattern, "--include")
    for pattern in options.excludes:
        check_pattern(pattern, "--exclude")
    entrypoints = [t.command[0] for t in traces if t.command]
    image_command = [*(config.entrypoint or []), *(config.cmd or [])]
    if image_command:
        entrypoints.append(image_command[0])
    return SelectionRequest(
        traced=merge_traced(traces),
        entrypoint=list(dict.fromkeys(entrypoints)),
        healthcheck=(config.healthcheck_argv() or [])[:1],
        includes=list(options.includes),
        excludes=list(options.excludes),
        env=config.env_dict(),
        workdir=config.workdir or "/",
        volumes=list(config.volumes),
        runtime_extras=options.runtime_extras,
        mtime_clamp=created_epoch(created),
    )


def build_micro(
    engine: Engine,
    image: str,
    traces: list[Trace],
    options: BuildOptions,
    cache_dir: Path,
    trace_paths: list[str],
) -> BuildResult:
    started = time.monotonic()
    seconds: dict[str, float] = {}
    attrs = engine.image_attrs(image)
    image_id = str(attrs.get("Id", ""))
    check_traces(traces, image, image_id, options.force)
    config = ImageConfig.from_inspect(attrs)
    request = selection_request(traces, config, options, attrs.get("Created"))
    base = BASES.get(options.base, options.base)
    bundle = sensor_bundle(cache_dir)
    if base != "scratch":
        if not engine.image_exists(base):
            log.info("pulling the base image %s", base)
            engine.pull(base)
        inventory = RunConfig(mode=Mode.INVENTORY.value)
        request = replace(
            request, base_dirs=run_sensor_once(engine, base, bundle, inventory)["dir_paths"]
        )
    run_config = RunConfig(
        mode=Mode.COLLECT.value,
        env=config.env_dict(),
        workdir=config.workdir or "/",
        selection=asdict(request),
    )
    labels = {SOURCE_LABEL: image, SOURCE_ID_LABEL: image_id, VERSION_LABEL: __version__}
    dockerfile, dockerfile_warnings = render_dockerfile(config, base, labels)

    with tempfile.TemporaryDirectory(prefix="slim-build-") as scratch:
        rootfs_path = Path(scratch) / "rootfs.tar"
        log.info("collecting files in a container of %s", image)
        with sensor_container(engine, image, bundle, run_config, new_run_id()) as sensor:
            status = sensor.wait_exit(600)
            if status != 0:
                raise SensorError(
                    f"collecting files failed ({sensor.last_error() or f'exit {status}'})",
                    "run with --debug for the container's output",
                )
            selection = Selection.from_json(sensor.result()["selection"])
            try:
                with (
                    engine.open_file_stream(sensor.container, OUTPUT_TAR) as stream,
                    rootfs_path.open("wb") as out,
                ):
                    stats = copy_validated(stream, selection, out)
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

        context_path = options.context_only or Path(scratch) / "context.tar"
        try:
            with rootfs_path.open("rb") as rootfs, context_path.open("wb") as out:
                write_context(dockerfile, rootfs, rootfs_path.stat().st_size, out)
        except BaseException as exc:
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
        if options.context_only is None:
            if not options.tag:
                raise SlimError("no tag for the micro image", "give one with -t NAME[:TAG]")
            log.info("building %s", options.tag)
            build_started = time.monotonic()
            with context_path.open("rb") as context:
                micro_id = engine.build(
                    context, options.tag, progress=lambda line: log.debug("%s", line)
                )
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
        dockerfile_warnings=dockerfile_warnings,
        traces=trace_paths,
        seconds=seconds,
    )
    if options.report is not None:
        options.report.parent.mkdir(parents=True, exist_ok=True)
        options.report.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return BuildResult(options.tag, micro_id, fat_size, micro_size, selection, report, seconds)
