"""The options that several commands share, each group turned into one
typed object before the command runs: `trace_options` -> TraceOptions
(trace, build), `verify_options` -> VerifyRequest (verify),
`build_options` -> BuildOptions (build, on top of trace_options).

A group is a list of click options plus a function that makes the object
from their values; the command receives only the object."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from slimmer.cli.base import SECONDS, host_env, output_file
from slimmer.datasets import DATA_SET_NAMES
from slimmer.delivery import parse_output
from slimmer.discovery import CrawlLimits, load_openapi, openapi_routes
from slimmer.errors import NotFound, UsageError
from slimmer.sbom import SbomFormat
from slimmer.userspec import UserSpecError, parse_user_spec

if TYPE_CHECKING:  # the flows' modules load when a command runs, not for --help
    from slimmer.builder import BuildOptions
    from slimmer.probes import ProbeRequest
    from slimmer.trace import HttpProbe
    from slimmer.tracer import TraceOptions
    from slimmer.verify import VerifyRequest

SBOM_FORMATS = tuple(form.value for form in SbomFormat)  # light: the SBOM code loads on use

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
Decorator = Callable[[F], F]


def format_option(help_text: str) -> Callable[[F], F]:
    """--format text|json|markdown, given to the command as `output`."""
    return click.option(
        "--format",
        "output",
        type=click.Choice(["text", "json", "markdown"]),
        default="text",
        show_default=True,
        help=help_text,
    )


def option_group(
    target: str,
    make: Callable[..., Any],
    options: Sequence[Decorator],
    consumes: tuple[str, ...] = (),
) -> Decorator:
    """Add `options` to a command and hand it `make(**their values)` as the
    keyword argument `target` instead of the values themselves. `consumes`
    names objects of groups applied above this one that `make` takes too."""

    def probe() -> None:
        return None

    for option in reversed(options):
        option(probe)
    names = [param.name for param in probe.__click_params__]  # type: ignore[attr-defined]

    def decorate(function: F) -> F:
        @wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in (*names, *consumes)}
            kwargs[target] = make(**values)
            return function(*args, **kwargs)

        for option in reversed(options):
            wrapper = option(wrapper)
        return wrapper  # type: ignore[return-value]

    return decorate


def _probe_request(
    *,
    http_probes: tuple[str, ...],
    exec_probes: tuple[str, ...],
    client_probes: tuple[str, ...],
    host_probes: tuple[str, ...],
    probe_port: int | None,
    ready_timeout: float,
    default_get: bool,
    healthcheck: bool,
    openapi: Path | None = None,
    crawl: CrawlLimits | None = None,
) -> ProbeRequest:
    from slimmer.probes import (
        ProbeRequest,
        parse_client_probe,
        parse_exec_probe,
        parse_host_probe,
        parse_http_probe,
    )

    return ProbeRequest(
        http=(*(parse_http_probe(p) for p in http_probes), *openapi_probes(openapi)),
        execs=tuple(parse_exec_probe(p) for p in exec_probes),
        clients=tuple(parse_client_probe(p, probe_port) for p in client_probes),
        hosts=tuple(parse_host_probe(p, probe_port) for p in host_probes),
        default_get=default_get,
        healthcheck=healthcheck,
        crawl=crawl,
        ready_timeout=ready_timeout,
        host_env=host_env(),
    )


def openapi_probes(path: Path | None) -> tuple[HttpProbe, ...]:
    """GET probes of every route an OpenAPI document names (those it gives
    no value for a parameter are said, not guessed)."""
    from slimmer.trace import Discovery, HttpProbe

    if path is None:
        return ()
    try:
        document = load_openapi(path.read_bytes(), str(path))
    except OSError as exc:
        raise NotFound(f"cannot read --openapi {path}: {exc.strerror}") from None
    routes = openapi_routes(document)
    for route, why in routes.skipped:
        log.warning("--openapi: GET %s is not probed: %s", route, why)
    if not routes.paths:
        raise UsageError(f"--openapi {path} names no GET route slim can request")
    return tuple(
        HttpProbe("GET", route, None, found_by=Discovery.OPENAPI) for route in routes.paths
    )


EXPECT_NOTE = "a ! in front: it is expected to fail"


def _probe_options(http_help: str, note: str) -> list[Decorator]:
    return [
        click.option("--http-probe", "http_probes", multiple=True,
                     metavar="[!][METHOD:]PATH[:PORT]", help=http_help),
        click.option("--probe-exec", "exec_probes", multiple=True, metavar="[!]CMD",
                     help=f"Command run inside the container once the app listens ({note}); "
                     f"it must exit 0 ({EXPECT_NOTE}); repeatable."),
        click.option("--probe-client", "client_probes", multiple=True, metavar="[!]CMD",
                     help="Command run in a separate container of the fat image that shares "
                     "the app's network (127.0.0.1 is the app; SLIM_TARGET_PORT is the "
                     "app's port), e.g. a database's own client; its files are not traced; "
                     f"it must exit 0 ({EXPECT_NOTE}); repeatable."),
        click.option("--probe-host", "host_probes", multiple=True, metavar="[!]CMD",
                     help=f"Shell command run on this machine ({note}) with SLIM_TARGET_HOST and "
                     "SLIM_TARGET_PORT (the published port; SLIM_TARGET_PORT_<N> for container "
                     f"port N, SLIM_TARGET_PORTS all); it must exit 0 ({EXPECT_NOTE}); "
                     "repeatable."),
        click.option("--probe-port", type=click.IntRange(1, 65535), default=None, metavar="PORT",
                     help="The container port --probe-client and --probe-host talk to, published "
                     "and waited for until the app listens (default: the first exposed TCP "
                     "port)."),
        click.option("--until-exit", is_flag=True,
                     help="Batch job: no HTTP probes; wait until the app exits."),
        click.option("--exit-timeout", type=SECONDS, default=None, metavar="S",
                     help="With --until-exit: give up on the app after S seconds."),
        click.option("--expect-exit", type=click.IntRange(0, 255), default=0, show_default=True,
                     metavar="N",
                     help="With --until-exit: the exit status the job must end with on the fat "
                     "image (another status is a failure)."),
        click.option("--ready-timeout", type=SECONDS, default=30.0, show_default=True, metavar="S",
                     help="How long the app may take to answer HTTP, listen on its port, or "
                     "pass its HEALTHCHECK."),
    ]  # fmt: skip


def _split_entrypoint(text: str | None) -> list[str] | None:
    from slimmer.probes import split_command

    if text is None:
        return None
    return list(split_command(text)) if text else []


def _make_trace_options(
    *,
    until_exit: bool,
    exit_timeout: float | None,
    expect_exit: int,
    no_default_probe: bool,
    duration: float,
    stop_timeout: float,
    stop_signal: str | None,
    user: str | None,
    entrypoint: str | None,
    quiet_app: bool,
    no_syscalls: bool,
    no_crawl: bool,
    crawl_pages: int,
    crawl_depth: int,
    crawl_seconds: float,
    openapi: Path | None,
    command: tuple[str, ...],
    **probe_values: Any,
) -> TraceOptions:
    from slimmer.trace import parse_signal
    from slimmer.tracer import TraceOptions

    if user is not None:
        try:
            parse_user_spec(user)
        except UserSpecError as exc:
            raise UsageError(f"--user {user!r}: {exc}", "give USER[:GROUP], names or ids") from None
    return TraceOptions(
        cmd=list(command) or None,
        entrypoint=_split_entrypoint(entrypoint),
        user=user,
        probes=_probe_request(
            **probe_values,
            default_get=not no_default_probe,
            healthcheck=True,
            openapi=openapi,
            crawl=None
            if no_crawl or crawl_pages == 0
            else CrawlLimits(pages=crawl_pages, depth=crawl_depth, seconds=crawl_seconds),
        ),
        duration=duration,
        until_exit=until_exit,
        expect_exit=expect_exit,
        exit_timeout=exit_timeout,
        stop_timeout=stop_timeout,
        stop_signal=parse_signal(stop_signal) if stop_signal else None,
        echo_app=not quiet_app,
        syscalls=not no_syscalls,
    )


trace_options = option_group(
    "trace_options",
    _make_trace_options,
    [
        *_probe_options("HTTP request to make once the app answers; it must answer below 500 "
                        f"({EXPECT_NOTE}: no answer or a 5xx); repeatable (default: GET / on "
                        "each exposed TCP port).", "traced too"),
        click.option("--no-default-probe", is_flag=True, help="Do not send the default GET /."),
        click.option("--no-crawl", is_flag=True,
                     help="Do not follow the links of the app's HTML answers."),
        click.option("--crawl-pages", type=click.IntRange(0, 100_000), default=50,
                     show_default=True, metavar="N",
                     help="Request at most N pages found by following same-origin links of "
                     "HTML answers (href, src, directory listings); 0: no crawl."),
        click.option("--crawl-depth", type=click.IntRange(1, 100), default=3, show_default=True,
                     metavar="D", help="Follow links at most D pages deep from a probed page."),
        click.option("--crawl-seconds", type=SECONDS, default=15.0, show_default=True,
                     metavar="S", help="Stop crawling after S seconds."),
        click.option("--openapi", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     metavar="FILE",
                     help="Probe every GET route of this OpenAPI 3 / Swagger 2 document (JSON or "
                     "YAML), on each exposed port; parameters from its examples."),
        click.option("--duration", type=SECONDS, default=0.0, metavar="S",
                     help="Keep tracing S seconds after the probes."),
        click.option("--stop-timeout", type=SECONDS, default=10.0, show_default=True,
                     metavar="S", help="Grace time after the stop signal before SIGKILL."),
        click.option("--stop-signal", default=None, metavar="SIG",
                     help="Signal that stops the app (default: the image's STOPSIGNAL, "
                     "or SIGTERM)."),
        click.option("--user", default=None,
                     help="Run the app as USER[:GROUP] (default: the image's USER)."),
        click.option("--entrypoint", default=None, metavar="CMD",
                     help="Replace the image's ENTRYPOINT (split like a shell would)."),
        click.option("--quiet-app", is_flag=True, help="Do not echo the app's output."),
        click.option("--no-syscalls", is_flag=True,
                     help="Do not observe lookups at the system call (ptrace + seccomp); "
                     "inotify alone sees what is opened, not what is only stat'ed or missing."),
        click.argument("command", nargs=-1, type=click.UNPROCESSED),
    ],
)  # fmt: skip


def _make_verify_request(
    *,
    until_exit: bool,
    exit_timeout: float | None,
    expect_exit: int,
    headers: tuple[str, ...],
    **probe_values: Any,
) -> VerifyRequest:
    from slimmer.verify import DEFAULT_EXIT_TIMEOUT, DEFAULT_HEADERS, VerifyRequest

    return VerifyRequest(
        probes=_probe_request(**probe_values, default_get=False, healthcheck=False),
        until_exit=until_exit,
        expect_exit=expect_exit,
        headers=tuple(h.lower() for h in headers) or DEFAULT_HEADERS,
        exit_timeout=exit_timeout or DEFAULT_EXIT_TIMEOUT,
    )


verify_options = option_group(
    "request",
    _make_verify_request,
    [
        *_probe_options("HTTP request to compare; repeatable (default: the trace's, else "
                        "GET / on each exposed TCP port).", "its answers compared"),
        click.option("--header", "headers", multiple=True, metavar="NAME",
                     help="Response header to compare; repeatable (default: content-type, "
                     "content-length, location, content-encoding)."),
    ],
)  # fmt: skip


def read_include_file(path: str) -> list[str]:
    """Patterns from a file, one a line; blank lines and # comments skipped."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise NotFound(f"cannot read --include-file {path}: {exc.strerror}") from None
    if b"\0" in data:
        raise UsageError(
            f"--include-file {path} is not a text file", "one pattern a line, # comments"
        )
    lines = os.fsdecode(data).splitlines()  # image paths need not be UTF-8
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _make_build_options(
    *,
    tags: tuple[str, ...],
    trace_files: tuple[Path, ...],
    retrace: bool,
    includes: tuple[str, ...],
    include_files: tuple[str, ...],
    excludes: tuple[str, ...],
    base: str,
    context_only: Path | None,
    report_path: Path | None,
    force: bool,
    run_verify: bool,
    no_app_content: bool,
    no_program_siblings: bool,
    no_code_closure: bool,
    no_keep_data: tuple[str, ...],
    layers: bool,
    no_package_records: bool,
    strip: bool,
    strip_except: tuple[str, ...],
    init: bool,
    sbom_path: Path | None,
    sbom_format: str,
    labels: tuple[str, ...],
    platform: str | None,
    push: bool,
    outputs: tuple[str, ...],
    iidfile: Path | None,
    trace_options: TraceOptions,
) -> BuildOptions:
    from slimmer.builder import BuildOptions, SavedTrace

    for path, option in (
        (context_only, "--context-only"),
        (report_path, "--report"),
        (sbom_path, "--sbom"),
        (iidfile, "--iidfile"),
    ):
        if path is not None:
            output_file(path, option)
    patterns = list(includes)
    for include_file in include_files:
        patterns += read_include_file(include_file)
    return BuildOptions(
        tags=tags,
        includes=tuple(patterns),
        excludes=excludes,
        base=base,
        context_only=context_only,
        report=report_path,
        force=force,
        app_content=not no_app_content,
        program_siblings=not no_program_siblings,
        code_closure=not no_code_closure,
        keep_data=kept_data_sets(no_keep_data),
        traces=tuple(SavedTrace.load(path) for path in trace_files),
        retrace=retrace,
        trace=trace_options,
        verify=run_verify,
        layers=layers,
        package_records=not no_package_records,
        strip=strip,
        strip_except=strip_except,
        init=init,
        sbom=sbom_path,
        sbom_format=SbomFormat(sbom_format),
        labels=parse_labels(labels),
        platform=platform,
        push=push,
        outputs=tuple(parse_output(text) for text in outputs),
        iidfile=iidfile,
    )


def kept_data_sets(left_out: tuple[str, ...]) -> tuple[str, ...]:
    """The keyed data sets to keep: all but those --no-keep-data names."""
    if "all" in left_out:
        return ()
    return tuple(name for name in DATA_SET_NAMES if name not in left_out)


def parse_labels(given: tuple[str, ...]) -> dict[str, str]:
    """`--label KEY=VALUE` (or KEY, an empty value), as docker build reads them."""
    labels: dict[str, str] = {}
    for item in given:
        key, _, value = item.partition("=")
        if not key.strip() or key != key.strip():
            raise UsageError(f"bad --label {item!r}", "write it as KEY=VALUE")
        labels[key] = value
    return labels


build_options = option_group(
    "options",
    _make_build_options,
    [
        click.option("-t", "--tag", "tags", multiple=True, metavar="NAME[:TAG]",
                     help="Name of the micro image; repeatable (each is applied; the first "
                     "names the report and SBOM)."),
        click.option("--trace", "trace_files", multiple=True,
                     type=click.Path(dir_okay=False, path_type=Path),
                     help="Trace file(s) to build from; several are merged. Default: "
                     ".slim/<image>.trace.json if it is there, else trace first."),
        click.option("--retrace", is_flag=True,
                     help="Trace again even if a trace of the image is there."),
        click.option("--include", "includes", multiple=True, metavar="PATH|GLOB",
                     help="Also keep this image path (a directory: all of it) or glob; "
                     "repeatable."),
        click.option("--include-file", "include_files", multiple=True, metavar="FILE",
                     help="A file of --include patterns, one a line, # comments."),
        click.option("--exclude", "excludes", multiple=True, metavar="GLOB",
                     help="Leave out paths matching this glob; repeatable."),
        click.option("--base", default="scratch", show_default=True,
                     help="What to build on: scratch, busybox, or any local image."),
        click.option("--context-only", type=click.Path(dir_okay=False, path_type=Path),
                     default=None,
                     help="Write the build context tar here and stop "
                     "(docker build - < FILE builds it)."),
        click.option("--report", "report_path",
                     type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="Where to write report.json (default .slim/<tag>.report.json)."),
        click.option("--force", is_flag=True,
                     help="Use traces of another image id, or incomplete ones."),
        click.option("--no-app-content", is_flag=True,
                     help="Do not keep the app's own files (those no OS package owns) beside "
                     "and below the folders it read a data file from."),
        click.option("--no-program-siblings", is_flag=True,
                     help="Do not keep the other programs of a folder of programs (a CGI dir) "
                     "the app ran one from."),
        click.option("--no-code-closure", is_flag=True,
                     help="Do not keep what the kept interpreted code imports, requires, "
                     "includes or runs (Python, Perl, Ruby, Node, PHP, shell)."),
        click.option("--no-keep-data", multiple=True, metavar="NAME",
                     type=click.Choice([*DATA_SET_NAMES, "all"]),
                     help="Do not keep the whole data set NAME when the app read one member "
                     f"({', '.join(DATA_SET_NAMES)}, or all); repeatable."),
        click.option("--verify", "run_verify", is_flag=True,
                     help="Run slim verify on the fat and the micro image right after "
                     "building."),
        click.option("--layers/--no-layers", default=True, show_default=True,
                     help="Split the image into layers by update risk (OS base, OS packages, "
                     "application, configuration; large files alone), so images from one fat "
                     "base share layers; --no-layers: one layer."),
        click.option("--no-package-records", is_flag=True,
                     help="Leave out the records of the kept OS packages "
                     "(/var/lib/dpkg/status.d, apk's installed) and /etc/os-release, which "
                     "vulnerability scanners read."),
        click.option("--strip", is_flag=True,
                     help="Drop debug sections and symbol tables from kept ELF files, except "
                     "files a package database lists with a digest."),
        click.option("--strip-except", multiple=True, metavar="GLOB",
                     help="With --strip: leave files matching GLOB as they are (their bytes "
                     "are verified, e.g. by a checksum the app checks); repeatable."),
        click.option("--init", is_flag=True,
                     help="Run an init as PID 1 in front of the app (reaps orphans, forwards "
                     "signals): the image's own tini or dumb-init, else dumb-init from its "
                     "PyPI wheel (glibc images)."),
        click.option("--sbom", "sbom_path", type=click.Path(dir_okay=False, path_type=Path),
                     default=None,
                     help="Where to write the SBOM (default .slim/<tag>.sbom.json, "
                     ".slim/<tag>.spdx.json for SPDX)."),
        click.option("--sbom-format", type=click.Choice(SBOM_FORMATS),
                     default=SBOM_FORMATS[0], show_default=True,
                     help="The SBOM's format: CycloneDX 1.5 or SPDX 2.3, JSON."),
        click.option("--label", "labels", multiple=True, metavar="KEY=VALUE",
                     help="Add a label to the micro image (as docker build --label); "
                     "repeatable. The fat image's labels are kept anyway."),
        click.option("--push", is_flag=True,
                     help="Push every -t to its registry after the build, with the engine's "
                     "credentials (docker login); the report and SBOM get the digests."),
        click.option("--output", "outputs", multiple=True, metavar="KIND:PATH",
                     help="Also write the image without a registry: oci:DIR (an OCI image "
                     "layout; skopeo, podman) or docker-archive:FILE (docker load, podman "
                     "load); repeatable."),
        click.option("--iidfile", type=click.Path(dir_okay=False, path_type=Path),
                     default=None, help="Write the micro image's id to this file."),
        click.option("--platform", default=None, metavar="OS/ARCH",
                     help="The micro image's platform, as docker build --platform: only the "
                     "engine's own is possible (slim runs the app there)."),
    ],
    consumes=("trace_options",),
)  # fmt: skip
# Use below @trace_options: the trace options go into the BuildOptions
# (they are used when build traces first).
