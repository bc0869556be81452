"""From traces to the micro image: collect, layers, context, docker build,
SBOM and report (`slim build` after it chose its traces, slimmer.builder).

A container of the fat image runs the sensor in collect mode (the one the
trace ran in, when it can stand for the image): it selects the files there
(trace ∪ ELF closure ∪ includes − excludes, plus links, parents, written
dirs) and tars only those. The archive comes back through the Engine API,
is checked member by member, and is split into layer tars; the Dockerfile
carries the fat image's contract.
"""

from __future__ import annotations

import io
import logging
import re
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from slimmer import __version__, progress, wire
from slimmer.builder import (
    BuildOptions,
    SavedTrace,
    check_platform,
    check_traces,
    created_epoch,
    lookup_key,
    merge_traced,
)
from slimmer.bundle import Bundle, sensor_bundle
from slimmer.cleanup import scratch_directory, signals_held
from slimmer.context import (
    ROOTFS_MEMBER,
    ContextError,
    ContextMember,
    FileDigests,
    RootfsStats,
    copy_validated,
    write_context,
)
from slimmer.delivery import (
    OutputKind,
    remove_partial_layout,
    write_docker_archive,
    write_oci_layout,
)
from slimmer.dockerfile import MicroDockerfile, render_dockerfile
from slimmer.engineinfo import split_reference
from slimmer.errors import ExitCode, SlimError
from slimmer.fileset import Entry, Selection, SelectionRequest
from slimmer.layers import (
    MAX_LAYERS,
    Granularity,
    LayerPolicy,
    RootfsSource,
    WrittenLayer,
    plan_image,
    with_generated,
    write_layer,
)
from slimmer.outputs import write_output, writing
from slimmer.pid1 import InitChoice, InitProblem, find_wheel_init, read_init_bytes, with_init
from slimmer.protocol import (
    INIT_BINARY,
    CollectJob,
    CollectResult,
    InitWheel,
    InventoryJob,
    InventoryResult,
    StripJob,
)
from slimmer.records import GeneratedFile, check_placement, dated_records
from slimmer.report import (
    BuildReport,
    LayerRecord,
    Production,
    build_report,
    human_size,
    packages_report,
    strip_report,
)
from slimmer.rootfs import Kind
from slimmer.runner import SensorContainer, SensorError, run_sensor_once, sensor_container
from slimmer.sbom import SbomFormat
from slimmer.sbom.model import ImageSubject, SbomInput, sbom_files
from slimmer.sbom.render import render_sbom
from slimmer.trace import (
    ImageConfig,
    Trace,
)

if TYPE_CHECKING:
    from slimmer.engine import Engine

log = logging.getLogger(__name__)

BASES = {"scratch": "scratch", "busybox": "busybox:latest"}
SOURCE_LABEL = "io.slim.source.image"
SOURCE_ID_LABEL = "io.slim.source.id"
VERSION_LABEL = "io.slim.version"
COLLECT_TIMEOUT = 600.0
ENGINE_MAX_LAYERS = 120  # Docker refuses images of more than 127 layers (overlayfs' limit)


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
    digests: tuple[str, ...] = ()  # repo@sha256:... of each pushed tag


class PushProgress:
    """docker push's per-layer progress as one figure: bytes pushed of the
    layers' sizes."""

    def __init__(self) -> None:
        self.layers: dict[str, tuple[int, int]] = {}

    def __call__(self, layer: str, current: int, total: int) -> None:
        if not layer:
            return
        done, size = self.layers.get(layer, (0, 0))
        self.layers[layer] = (max(done, current), max(size, total))
        progress.update(
            progress.PUSH,
            sum(d for d, _ in self.layers.values()),
            sum(t for _, t in self.layers.values()) or None,
        )


def deliver(engine: Engine, micro_id: str, options: BuildOptions) -> tuple[str, ...]:
    """After the build: push every tag (--push), write each --output, the
    image id to --iidfile. Returns the pushed digests (repo@sha256:...)."""
    digests = []
    if options.push:
        for tag in options.tags:
            log.info("pushing %s", tag)
            digest = engine.push(tag, PushProgress())
            progress.finish(progress.PUSH)
            if digest:
                repository = split_reference(tag)[0]
                digests.append(f"{repository}@{digest}")
    for output in options.outputs:
        log.info("writing %s", output.describe())
        existed = output.path.exists()
        try:
            with engine.saved_image(list(options.tags)) as stream:
                if output.kind is OutputKind.DOCKER_ARCHIVE:
                    write_docker_archive(stream, output.path)
                else:
                    write_oci_layout(stream, output.path, options.tags)
        except BaseException:
            if output.kind is OutputKind.OCI:
                with signals_held():
                    remove_partial_layout(output.path, existed)
            raise
    if options.iidfile is not None:
        write_output(options.iidfile, f"{micro_id}\n".encode(), "the image id")
    return tuple(digests)


def selection_request(
    traces: list[Trace], config: ImageConfig, options: BuildOptions, created: str | None = None
) -> SelectionRequest:
    entrypoints = [t.command[0] for t in traces if t.command]
    image_command = config.command()
    if image_command:
        entrypoints.append(image_command[0])
    return SelectionRequest(
        traced=merge_traced(traces),
        lookups=tuple(sorted({lookup for t in traces for lookup in t.lookups}, key=lookup_key)),
        entrypoint=tuple(dict.fromkeys(entrypoints)),
        healthcheck=tuple(config.healthcheck_programs()),
        includes=options.includes,
        excludes=options.excludes,
        env=config.env_dict(),
        workdir=config.workdir or "/",
        volumes=config.volumes,
        runtime_extras=options.runtime_extras,
        app_content=options.app_content,
        program_siblings=options.program_siblings,
        code_closure=options.code_closure,
        keep_data=options.keep_data,
        engine_mtime=created_epoch(created),
    )


def wheel_init_files() -> tuple[InitWheel, dict[str, bytes]]:
    """For --init: the dumb-init wheel's binary, to put in the collecting
    sensor's run dir (the sensor uses the image's own init when it has one)."""
    binary = find_wheel_init()
    if binary is None:
        return InitWheel.NOT_INSTALLED, {}
    data = read_init_bytes(binary)
    if isinstance(data, InitProblem):
        raise SlimError(data.reason, "reinstall the dumb-init package (pip install dumb-init)")
    return InitWheel.PROVIDED, {INIT_BINARY: data}


@dataclass(frozen=True)
class Collected:
    """What the collecting container gave: its result, and the validated
    rootfs tar on the host with the sha256 of every file in it."""

    result: CollectResult
    rootfs: Path
    stats: RootfsStats
    digests: dict[str, FileDigests]


def collect(
    engine: Engine,
    image: str,
    bundle: Bundle,
    job: CollectJob,
    rootfs_path: Path,
    run_files: dict[str, bytes],
    collector: SensorContainer | None = None,
) -> Collected:
    """Run the collecting sensor and copy its archive, checked member by
    member, to `rootfs_path`: in the container a trace just ran in when it
    stands for the image (`collector`, whose sensor awaits the job), else in
    a new container of the image."""
    if collector is not None:
        log.info("collecting files in the traced container of %s", image)
        collector.hand_over(job, run_files)
        collected = collected_from(engine, collector, rootfs_path)
        # Done with it: removed while the build goes on (and again, if need be,
        # when the trace's block ends).
        threading.Thread(
            target=engine.remove_container, args=(collector.container.id,), daemon=True
        ).start()
        return collected
    log.info("collecting files in a container of %s", image)
    with sensor_container(
        engine,
        image,
        bundle,
        job,
        engine.new_run_id(),
        workdir=job.selection.workdir,
        run_files=run_files,
    ) as sensor:
        return collected_from(engine, sensor, rootfs_path)


def collected_from(engine: Engine, sensor: SensorContainer, rootfs_path: Path) -> Collected:
    """Wait for a collecting sensor's result (its container's end, or its
    CollectWritten), then copy its archive out, checked."""
    if not sensor.wait_finished(COLLECT_TIMEOUT):
        raise SensorError(f"collecting files took longer than {COLLECT_TIMEOUT:.0f}s")
    progress.finish(progress.COLLECT)
    result = sensor.result_of(CollectResult)
    file_bytes = sum(e.size for e in result.selection.entries if e.kind is Kind.FILE)
    digests: dict[str, FileDigests] = {}
    try:
        with (
            engine.open_file_stream(sensor.container, sensor.layout.output_tar) as stream,
            rootfs_path.open("wb") as out,
            CountingReader(stream, progress.COPY, file_bytes) as counted,
        ):
            stats = copy_validated(counted, result.selection, out, digests)
    except OSError as exc:
        raise cannot_write(f"cannot write {rootfs_path}: {exc.strerror}") from None
    return Collected(result, rootfs_path, stats, digests)


def cannot_write(message: str) -> ContextError:
    error = ContextError(message, "free some space in TMPDIR, or point TMPDIR elsewhere")
    error.exit_code = ExitCode.RESOURCE
    return error


@dataclass(frozen=True)
class ImageLayers:
    """The micro image's layer tars, written in the scratch directory."""

    files: tuple[Path, ...]
    written: tuple[WrittenLayer, ...]
    entries: tuple[Entry, ...]  # the collected entries plus the package records


def layer_policy(options: BuildOptions, base_layers: int) -> LayerPolicy:
    if not options.layers:
        return LayerPolicy(Granularity.SINGLE)
    return LayerPolicy(max_layers=max(1, min(MAX_LAYERS, ENGINE_MAX_LAYERS - base_layers)))


def package_records_of(collected: Collected, options: BuildOptions) -> tuple[GeneratedFile, ...]:
    if not options.package_records:
        return ()
    mtimes = {e.path: e.mtime for e in collected.result.selection.entries}
    return dated_records(collected.result.packages, mtimes)


def write_image_layers(
    collected: Collected,
    records: tuple[GeneratedFile, ...],
    policy: LayerPolicy,
    directory: Path,
) -> ImageLayers:
    """Split the collected rootfs (and the package records) into layer
    tars in `directory`: one (rootfs.tar) without layers."""
    result = collected.result
    with (
        collected.rootfs.open("rb") as rootfs,
        RootfsSource(rootfs, {r.path: r.data for r in records}) as source,
    ):
        plan = plan_image(
            result.selection.entries, result.packages, records, source.hard_links(), policy
        )
        files, written = [], []
        for index, layer in enumerate(plan.layers):
            name = (
                ROOTFS_MEMBER
                if policy.granularity is Granularity.SINGLE
                else f"layer{index:03d}.tar"
            )
            path = directory / name
            try:
                with path.open("wb") as out:
                    written.append(write_layer(layer, plan, source, out))
            except OSError as exc:
                raise cannot_write(f"cannot write {path}: {exc.strerror}") from None
            files.append(path)
    entries = with_generated(
        result.selection.entries, records, max((r.mtime for r in records), default=0)
    )
    return ImageLayers(tuple(files), tuple(written), tuple(entries))


def write_context_file(
    dockerfile: MicroDockerfile, layers: ImageLayers, context_path: Path, *, given: bool
) -> None:
    """The context tar: at the path the user gave (--context-only), written
    as every output is (slimmer.outputs: nothing of the user's is removed
    when it fails), or in the scratch directory for the build."""
    with ExitStack() as stack:
        members = [
            ContextMember(path.name, stack.enter_context(path.open("rb")), path.stat().st_size)
            for path in layers.files
        ]
        if given:
            with writing(context_path, "the build context") as out:
                write_context(dockerfile.text, members, out)
            return
        try:
            with context_path.open("wb") as out:
                write_context(dockerfile.text, members, out)
        except OSError as exc:
            raise cannot_write(
                f"cannot write the build context {context_path}: {exc.strerror}"
            ) from None


def config_with_init(config: ImageConfig, init: InitChoice | None) -> ImageConfig:
    """The micro image's config: the fat image's, with the init in front of
    the app's command (--init)."""
    if init is None:
        return config
    entrypoint, cmd = with_init(config.entrypoint, config.cmd, init)
    return replace(
        config,
        entrypoint=tuple(entrypoint) if entrypoint is not None else None,
        cmd=tuple(cmd) if cmd is not None else None,
    )


def engine_layers(engine: Engine, micro_id: str, base: str, count: int) -> list[str] | None:
    """The engine's own layers (diff_ids) of the ADDs, bottom first; None
    (with a warning) when they cannot be matched to slim's layer tars."""
    layers = list((engine.image_attrs(micro_id).get("RootFS") or {}).get("Layers") or [])
    below = 0
    if base != "scratch":
        below = len((engine.image_attrs(base).get("RootFS") or {}).get("Layers") or [])
    ours = layers[below:]
    if len(ours) != count:
        log.warning(
            "the engine made %d layers for %d layer tars; the report leaves diff_id out",
            len(ours),
            count,
        )
        return None
    return ours


def write_sbom(
    path: Path,
    form: SbomFormat,
    subject: ImageSubject,
    collected: Collected,
) -> None:
    """The SBOM of the micro image (see slimmer.sbom), written whole."""
    result = collected.result
    owned = result.packages.owner_map()
    data = SbomInput(
        subject=subject,
        tool_version=__version__,
        packages=result.packages,
        components=result.components,
        files=sbom_files(result.selection.entries, owned, collected.digests),
    )
    write_output(path, render_sbom(data, form).encode("utf-8"), "the SBOM")


def build_micro(
    engine: Engine,
    image: str,
    traces: list[SavedTrace],
    options: BuildOptions,
    cache_dir: Path,
    collector: SensorContainer | None = None,
) -> BuildResult:
    """Build the micro image from traces; `collector`: the container the
    trace ran in, when the collect can run there (choose_traces)."""
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
    init_wheel, run_files = wheel_init_files() if options.init else (None, {})
    bundle = sensor_bundle(cache_dir)
    base_layers = 0
    if base != "scratch":
        if not engine.image_exists(base):
            log.info("pulling the base image %s", base)
            engine.pull(base)
        base_layers = len((engine.image_attrs(base).get("RootFS") or {}).get("Layers") or [])
        inventory = run_sensor_once(engine, base, bundle, InventoryJob(), InventoryResult)
        request = replace(request, base_dirs=inventory.dir_paths)
    job = CollectJob(
        selection=request,
        package_records=options.package_records,
        strip=StripJob(protect=options.strip_except) if options.strip else None,
        init=init_wheel,
    )

    with scratch_directory("slim-build-") as scratch:
        collected = collect(
            engine, image, bundle, job, scratch / "rootfs.tar", run_files, collector
        )
        result = collected.result
        seconds["collect"] = round(time.monotonic() - started, 3)
        seconds.update({f"sensor.{step}": t for step, t in result.seconds.items()})
        log.info(
            "selected %d paths, %s in files",
            collected.stats.members,
            human_size(collected.stats.file_bytes),
        )
        for warning in result.selection.warnings:
            log.warning("%s", warning)
        if result.init is not None:
            for passed_over in result.init.passed_over:
                log.warning("--init: %s; %s is used instead", passed_over, result.init.path)

        layers_started = time.monotonic()
        records = package_records_of(collected, options)
        check_placement(records, result.selection.entries, request.base_dirs)
        layers_dir = scratch / "layers"  # apart from the collected rootfs.tar
        layers_dir.mkdir()
        policy = layer_policy(options, base_layers)
        layers = write_image_layers(collected, records, policy, layers_dir)
        collected.rootfs.unlink()  # the layers hold it now
        seconds["layers"] = round(time.monotonic() - layers_started, 3)
        final_config = config_with_init(config, result.init)
        dockerfile = render_dockerfile(
            final_config, base, labels, [path.name for path in layers.files]
        )
        context_path = options.context_only or scratch / "context.tar"
        write_context_file(dockerfile, layers, context_path, given=options.context_only is not None)
        for path in layers.files:
            path.unlink()
        micro_id = micro_size = None
        diff_ids = None
        digests: tuple[str, ...] = ()
        if options.context_only is None and options.tags:
            log.info("building %s", ", ".join(options.tags))
            build_started = time.monotonic()
            size = context_path.stat().st_size
            with (
                context_path.open("rb") as context,
                CountingReader(context, progress.SEND, size) as counted,
            ):
                micro_id = engine.build(
                    counted,
                    options.tags[0],
                    labels={**dockerfile.labels, **options.labels},
                    build_args=dockerfile.build_args,
                    platform=options.platform,
                    progress=build_progress,
                )
            progress.finish(progress.BUILD)
            for tag in options.tags[1:]:
                engine.tag(micro_id, tag)
            seconds["build"] = round(time.monotonic() - build_started, 3)
            micro_size = int(engine.image_attrs(micro_id).get("Size", 0))
            diff_ids = engine_layers(engine, micro_id, base, len(layers.written))
            delivered_started = time.monotonic()
            digests = deliver(engine, micro_id, options)
            if options.push or options.outputs:
                seconds["deliver"] = round(time.monotonic() - delivered_started, 3)

    sbom_started = time.monotonic()
    sbom_path = options.sbom_path(image)
    epoch = created_epoch(attrs.get("Created"))
    subject = ImageSubject(
        name=options.tag or f"{image} (micro)",
        tags=options.tags,
        image_id=micro_id or "",
        digests=digests,
        source_image=image,
        source_id=image_id,
        created=datetime.fromtimestamp(epoch, UTC) if epoch is not None else None,
    )
    write_sbom(sbom_path, options.sbom_format, subject, collected)
    seconds["sbom"] = round(time.monotonic() - sbom_started, 3)
    fat_size = int(attrs.get("Size", 0))
    seconds["total"] = round(time.monotonic() - started, 3)
    production = Production(
        layers=tuple(
            LayerRecord(
                name=written.name,
                kind=written.kind,
                tar_digest=written.tar_digest,
                diff_id=diff_ids[index] if diff_ids is not None else None,
                size=written.size,
                files=written.files,
                file_bytes=written.file_bytes,
            )
            for index, written in enumerate(layers.written)
        ),
        packages=packages_report(result.packages, options.package_records),
        strip=strip_report(result.strip) if result.strip is not None else None,
        init=result.init,
        sbom=str(sbom_path),
    )
    report = build_report(
        image=image,
        image_id=image_id,
        tag=options.tag,
        micro_id=micro_id,
        fat_size=fat_size,
        micro_size=micro_size,
        selection=replace(result.selection, entries=layers.entries),
        dockerfile_warnings=[
            f"the engine did not report the image's {name.upper()}: the micro image has none"
            for name in config.unreported
        ],
        traces=[str(saved.path) for saved in traces],
        seconds=seconds,
        production=production,
    )
    report_path = options.report_path(image)
    write_output(report_path, wire.dumps(report).encode("ascii"), "the report")
    return BuildResult(
        options.tag,
        micro_id,
        fat_size,
        micro_size,
        result.selection,
        report,
        report_path,
        seconds,
        digests,
    )
