"""The `slim` command line: parse, call, print. No logic lives here."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from slimmer import __version__
from slimmer.errors import ExitCode, NotFound, SlimError

if TYPE_CHECKING:
    from slimmer.engine import Engine
    from slimmer.trace import Trace
    from slimmer.tracer import TraceOptions
    from slimmer.verify import VerifyPlan

log = logging.getLogger("slimmer")

F = TypeVar("F", bound=Callable[..., Any])


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Logs to whatever sys.stderr is at the time (click's runner swaps it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        return


def _fail(message: str, hint: str | None, code: int) -> None:
    click.echo(f"slim: error: {message}", err=True)
    if hint:
        click.echo(f"slim: hint: {hint}", err=True)
    sys.exit(code)


def handles_errors(command: F) -> F:
    """One line (and a hint) for errors users can act on; tracebacks only
    with --debug."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = click.get_current_context().find_root().params.get("debug", False)
        try:
            return command(*args, **kwargs)
        except SlimError as exc:
            if debug:
                raise
            _fail(exc.message, exc.hint, int(exc.exit_code))
        except KeyboardInterrupt:
            click.echo("slim: interrupted", err=True)
            sys.exit(int(ExitCode.INTERRUPTED))
        except OSError as exc:
            if debug:
                raise
            where = f" ({exc.filename})" if exc.filename else ""
            _fail(
                f"{exc.strerror or exc}{where}", "run with --debug for details", int(ExitCode.ERROR)
            )

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="slim")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors on stderr.")
def cli(debug: bool, quiet: bool) -> None:
    """slim makes micro container images from fat build images.

    It runs the application inside the fat image, records every file it
    opens, adds what the dynamic loader needs, and builds a FROM scratch
    image with only those files.

    \b
      slim trace IMAGE [-- CMD...]   run the app under the sensor, record files
      slim build IMAGE -t TAG        build the micro image from the trace
      slim verify FAT MICRO          replay the probes on both, compare answers
      slim compare IMAGE...          sizes, layers, files; gates for CI
      slim explain REPORT PATH       why a path is (not) in the micro image
      slim deps --root DIR PATH...   the ELF closure of files in a root dir
    """
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    logger = logging.getLogger("slimmer")
    if not any(isinstance(h, _CurrentStderr) for h in logger.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("slim: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)


def _parse_env(pairs: tuple[str, ...]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--env")
        env[name] = value
    return env


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@click.option(
    "--root",
    "root",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Directory that holds the image's file system (its /).",
)
@click.option(
    "--image",
    default=None,
    help="Look inside this image instead (the sensor runs in a container of it; "
    "its ENV and WORKDIR are used).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the closure as JSON (schema slim.deps/1)."
)
@click.option(
    "--env",
    "env_pairs",
    multiple=True,
    metavar="NAME=VALUE",
    help="The image's environment (LD_LIBRARY_PATH, LD_PRELOAD); repeatable. "
    "The host's is never used.",
)
@click.option(
    "--cwd",
    default=None,
    help="Working directory for relative paths (default: / or the image's WORKDIR).",
)
@click.option(
    "--runtime-extras",
    is_flag=True,
    help="Add what glibc dlopens itself: NSS modules from nsswitch.conf, libgcc_s.",
)
@click.option(
    "--gconv",
    is_flag=True,
    help="Add glibc's iconv modules ($libdir/gconv/*.so) and what they load.",
)
@click.option("--no-ld-cache", is_flag=True, help="Ignore /etc/ld.so.cache (as if it were absent).")
@click.option(
    "--as-if-ldconfig",
    is_flag=True,
    help="Search the dirs of /etc/ld.so.conf instead of ld.so.cache, as if ldconfig had run.",
)
@handles_errors
def deps(
    paths: tuple[str, ...],
    root: str | None,
    image: str | None,
    as_json: bool,
    env_pairs: tuple[str, ...],
    cwd: str | None,
    runtime_extras: bool,
    gconv: bool,
    no_ld_cache: bool,
    as_if_ldconfig: bool,
) -> None:
    """Show which files the dynamic loader needs for PATHS.

    PATHS are paths inside the root (executables, libraries or #! scripts).
    Nothing is run: the loader's search (RPATH, LD_LIBRARY_PATH, RUNPATH,
    ld.so.cache, default dirs, hwcaps; glibc or musl) is emulated inside the
    root, and symlinks never lead out of it. Exit status 1 when a library
    cannot be found.
    """
    from slimmer.depsreport import closure_to_json, render_tree
    from slimmer.loader import Loader
    from slimmer.rootfs import RootFS

    if (root is None) == (image is None):
        raise click.UsageError("give exactly one of --root DIR and --image IMAGE")
    if image is not None:
        report = _deps_in_image(
            image,
            paths,
            _parse_env(env_pairs),
            cwd,
            (runtime_extras, gconv),
            no_ld_cache,
            as_if_ldconfig,
        )
        lines = report.pop("tree")
    else:
        fs = RootFS(root)
        for path in paths:
            if not fs.exists(path, cwd=cwd or "/"):
                raise NotFound(
                    f"{path}: not found inside {root}",
                    "paths are inside the root, e.g. /usr/bin/env",
                )
        loader = Loader(
            fs,
            env=_parse_env(env_pairs),
            cwd=cwd or "/",
            use_ld_cache=not no_ld_cache,
            as_if_ldconfig=as_if_ldconfig,
        )
        closure = loader.closure(paths, runtime_extras=runtime_extras, gconv=gconv)
        report = closure_to_json(closure, root)
        lines = [line for link_map in closure.link_maps for line in render_tree(link_map)]
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        for line in lines:
            click.echo(line)
        for skipped in report["skipped"]:
            click.echo(f"{skipped['path']}: skipped ({skipped['reason']})")
    if report["missing"]:
        sys.exit(int(ExitCode.FAILURE))


def _deps_in_image(
    image: str,
    paths: tuple[str, ...],
    env: dict[str, str],
    cwd: str | None,
    extras: tuple[bool, bool],
    no_ld_cache: bool,
    as_if_ldconfig: bool,
) -> dict[str, Any]:
    from slimmer.bundle import sensor_bundle
    from slimmer.runner import run_sensor_once
    from slimmer.sensor.protocol import Mode, RunConfig
    from slimmer.trace import ImageConfig

    engine = _connect()
    try:
        config = ImageConfig.from_inspect(engine.image_attrs(image))
        run_config = RunConfig(
            mode=Mode.DEPS.value,
            env={**config.env_dict(), **env},
            workdir=cwd or config.workdir or "/",
            paths=list(paths),
            runtime_extras=extras[0],
            gconv=extras[1],
            use_ld_cache=not no_ld_cache,
            as_if_ldconfig=as_if_ldconfig,
        )
        report = run_sensor_once(engine, image, sensor_bundle(default_cache_dir()), run_config)
    finally:
        engine.close()
    not_found = report.pop("not_found")
    if not_found:
        raise NotFound(
            f"not found in {image}: {', '.join(not_found)}",
            "paths are the image's own, e.g. /usr/bin/env",
        )
    return report


def default_cache_dir() -> Path:
    """Where the sensor bundle is cached: $SLIM_CACHE_DIR, else
    $XDG_CACHE_HOME/slim, else ~/.cache/slim."""
    if os.environ.get("SLIM_CACHE_DIR"):
        return Path(os.environ["SLIM_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "slim"


def _connect() -> Engine:
    from slimmer.engine import Engine

    return Engine.connect()


def _apply(function: F, options: list[Callable[[F], F]]) -> F:
    for option in reversed(options):
        function = option(function)
    return function


def _probe_options(http_help: str, note: str, exit_timeout: float | None) -> list[Callable[[F], F]]:
    """The probe options of trace, build and verify."""
    return [
        click.option("--http-probe", "http_probes", multiple=True, metavar="[METHOD:]PATH[:PORT]",
                     help=http_help),
        click.option("--probe-exec", "exec_probes", multiple=True, metavar="CMD",
                     help=f"Command run inside the container ({note}); repeatable."),
        click.option("--probe-host", "host_probes", multiple=True, metavar="CMD",
                     help=f"Shell command run on the host with SLIM_TARGET_HOST and "
                     f"SLIM_TARGET_PORT set ({note}); repeatable."),
        click.option("--until-exit", is_flag=True,
                     help="Batch job: no HTTP probes; wait until the app exits."),
        click.option("--exit-timeout", type=float, default=exit_timeout, metavar="S",
                     help="With --until-exit: give up on the app after S seconds."),
        click.option("--ready-timeout", type=float, default=30.0, show_default=True, metavar="S",
                     help="How long the app may take to answer HTTP."),
    ]  # fmt: skip


def trace_options(function: F) -> F:
    """The options of a traced run, shared by trace and build."""
    return _apply(
        function,
        [
            *_probe_options("HTTP request to make once the app answers; repeatable "
                            "(default: GET / on each exposed TCP port).", "traced too", None),
            click.option("--no-default-probe", is_flag=True, help="Do not send the default GET /."),
            click.option("--duration", type=float, default=0.0, metavar="S",
                         help="Keep tracing S seconds after the probes."),
            click.option("--stop-timeout", type=float, default=10.0, show_default=True,
                         metavar="S", help="Grace time after the stop signal before SIGKILL."),
            click.option("--stop-signal", default=None, metavar="SIG",
                         help="Signal that stops the app (default: the image's STOPSIGNAL, "
                         "or SIGTERM)."),
            click.option("--user", default=None,
                         help="Run the app as USER[:GROUP] (default: the image's USER)."),
            click.option("--entrypoint", default=None, metavar="CMD",
                         help="Replace the image's ENTRYPOINT (split like a shell would)."),
            click.option("--quiet-app", is_flag=True, help="Do not echo the app's output."),
            click.argument("command", nargs=-1, type=click.UNPROCESSED),
        ],
    )  # fmt: skip


def _make_trace_options(params: dict[str, Any]) -> TraceOptions:
    from slimmer.probes import parse_http_probe, split_command
    from slimmer.tracer import TraceOptions

    entrypoint = params["entrypoint"]
    return TraceOptions(
        cmd=list(params["command"]) or None,
        entrypoint=split_command(entrypoint) if entrypoint else ([] if entrypoint == "" else None),
        user=params["user"],
        http_probes=tuple(parse_http_probe(p) for p in params["http_probes"]),
        exec_probes=tuple(p for p in params["exec_probes"] if split_command(p)),
        host_probes=tuple(params["host_probes"]),
        default_probes=not params["no_default_probe"],
        duration=params["duration"],
        until_exit=params["until_exit"],
        exit_timeout=params["exit_timeout"],
        ready_timeout=params["ready_timeout"],
        stop_timeout=params["stop_timeout"],
        stop_signal=params["stop_signal"],
        echo_app=not params["quiet_app"],
        host_env=dict(os.environ),
    )


def _print_trace_summary(trace: Trace, path: Path) -> None:
    created = sum(1 for f in trace.files if f.created)
    status = trace.exit_status
    exit_text = "?" if status is None else str(status)
    if trace.exit_signal:
        exit_text += f" (signal {trace.exit_signal})"
    click.echo(f"trace: {path}", err=True)
    click.echo(
        f"  files seen {len(trace.files)} ({created} created by the app), "
        f"watches {trace.watches}, events {trace.events}"
        + ("" if trace.complete else ", INCOMPLETE (queue overflow)"),
        err=True,
    )
    times = ", ".join(f"{k} {v:.1f}s" for k, v in trace.seconds.items())
    click.echo(f"  app exit {exit_text}; {times}", err=True)
    for probe in trace.probes:
        answer = probe.answer
        outcome = answer.get("status", answer.get("exit_code", answer.get("error")))
        click.echo(f"  probe {probe.kind} {probe.spec}: {outcome}", err=True)


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("image")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the trace (default .slim/<image>.trace.json).",
)
@trace_options
@handles_errors
def trace(image: str, output: Path | None, **params: Any) -> None:
    """Run IMAGE's app under the sensor and record every file it touches.

    The app is the image's ENTRYPOINT + CMD, or ENTRYPOINT + the COMMAND
    given after `--`. It runs as the image's USER with its ENV and WORKDIR;
    exposed TCP ports are published on 127.0.0.1, probed once the app
    answers, then the app is stopped with the image's STOPSIGNAL. No
    privileges and nothing in the image are needed.

    \b
      slim trace nginx-build -- /opt/nginx/sbin/nginx -g 'daemon off;'
      slim trace myjob:fat --until-exit -- /app/run.sh --once
    """
    from slimmer.trace import default_trace_path
    from slimmer.tracer import AppFailed, trace_image

    options = _make_trace_options(params)
    path = output or default_trace_path(image)
    engine = _connect()
    try:
        result = trace_image(engine, image, options, default_cache_dir())
    except AppFailed as exc:
        if exc.trace is not None:
            exc.trace.save(path)
            click.echo(f"slim: the trace was saved to {path}", err=True)
        raise
    finally:
        engine.close()
    result.save(path)
    _print_trace_summary(result, path)


def _file_safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def _read_include_file(path: str) -> list[str]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise NotFound(f"cannot read --include-file {path}: {exc.strerror}") from None
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("image")
@click.option("-t", "--tag", default=None, help="Name[:tag] of the micro image.")
@click.option(
    "--trace",
    "trace_files",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Trace file(s) to build from; several are merged. Default: "
    ".slim/<image>.trace.json if it is there, else trace first.",
)
@click.option("--retrace", is_flag=True, help="Trace again even if a trace of the image is there.")
@click.option(
    "--include",
    "includes",
    multiple=True,
    metavar="PATH|GLOB",
    help="Also keep this image path (a directory: all of it) or glob; repeatable.",
)
@click.option(
    "--include-file",
    "include_files",
    multiple=True,
    metavar="FILE",
    help="A file of --include patterns, one a line, # comments.",
)
@click.option(
    "--exclude",
    "excludes",
    multiple=True,
    metavar="GLOB",
    help="Leave out paths matching this glob; repeatable.",
)
@click.option(
    "--base",
    default="scratch",
    show_default=True,
    help="What to build on: scratch, busybox, or any local image.",
)
@click.option(
    "--context-only",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the build context tar here and stop (docker build - < FILE builds it).",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write report.json (default .slim/<tag>.report.json).",
)
@click.option("--force", is_flag=True, help="Use traces of another image id, or incomplete ones.")
@click.option(
    "--verify",
    "run_verify",
    is_flag=True,
    help="Run slim verify on the fat and the micro image right after building.",
)
@trace_options
@handles_errors
def build(
    image: str,
    tag: str | None,
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
    **params: Any,
) -> None:
    """Build a micro image of IMAGE from what its app touched.

    The file set is the trace ∪ the ELF closure of every traced ELF file and
    the entrypoint ∪ --include − --exclude, plus the symlinks on the way,
    parent directories and the directories the app wrote into (empty). Files
    the app created while traced are never copied. The micro image keeps
    ENTRYPOINT, CMD, ENV, WORKDIR, USER, EXPOSE, LABELs, STOPSIGNAL,
    HEALTHCHECK and VOLUMEs, owners, modes, setuid bits and hard links.

    \b
      slim build nginx-build -t nginx:micro
      slim build app:fat -t app:micro --trace a.json --trace b.json --include /etc/ssl/certs
    """
    from slimmer.builder import BuildOptions, build_micro
    from slimmer.fileset import check_pattern
    from slimmer.report import human_size
    from slimmer.trace import Trace, default_trace_path
    from slimmer.tracer import trace_image

    if not tag and context_only is None:
        raise click.UsageError(
            "give the micro image a name with -t NAME[:TAG] (or use --context-only)"
        )
    patterns = list(includes)
    for include_file in include_files:
        patterns += _read_include_file(include_file)
    for pattern in patterns:
        check_pattern(pattern, "--include")
    for pattern in excludes:
        check_pattern(pattern, "--exclude")
    options = BuildOptions(
        tag=tag,
        includes=tuple(patterns),
        excludes=excludes,
        base=base,
        context_only=context_only,
        report=report_path or Path(".slim") / f"{_file_safe(tag or image)}.report.json",
        force=force,
    )
    engine = _connect()
    try:
        paths = list(trace_files)
        default = default_trace_path(image)
        if not paths and not retrace and default.exists():
            image_id = engine.image_attrs(image).get("Id")
            if Trace.load(default).image_id == image_id:
                log.info("using the trace %s (--retrace to trace again)", default)
                paths = [default]
            else:
                log.info("%s is a trace of an older %s; tracing again", default, image)
        if paths:
            traces = [Trace.load(path) for path in paths]
        else:
            traced = trace_image(engine, image, _make_trace_options(params), default_cache_dir())
            traced.save(default)
            _print_trace_summary(traced, default)
            traces, paths = [traced], [default]
        result = build_micro(
            engine, image, traces, options, default_cache_dir(), [str(p) for p in paths]
        )
        if context_only is not None:
            click.echo(f"context: {context_only}", err=True)
        else:
            ratio = result.fat_size / result.micro_size if result.micro_size else 0
            click.echo(
                f"{image} {human_size(result.fat_size)} -> {tag} "
                f"{human_size(result.micro_size or 0)} ({ratio:.0f}x smaller)",
                err=True,
            )
        click.echo(f"report: {options.report}", err=True)
        if run_verify and tag and context_only is None:
            _run_verify(engine, image, tag, _verify_plan({}, traces[0]), show_all=False)
    finally:
        engine.close()


def _verify_options(function: F) -> F:
    return _apply(
        function,
        [
            *_probe_options("HTTP request to compare; repeatable (default: the trace's).",
                            "its answers compared", 300.0),
            click.option("--header", "headers", multiple=True, metavar="NAME",
                         help="Response header to compare; repeatable (default: content-type, "
                         "content-length, location, content-encoding)."),
            click.option("--all", "show_all", is_flag=True, help="Show matching checks too."),
        ],
    )  # fmt: skip


def _verify_plan(params: dict[str, Any], trace: Trace | None) -> VerifyPlan:
    from slimmer.probes import parse_http_probe
    from slimmer.verify import DEFAULT_HEADERS, VerifyPlan, plan_from_trace

    plan = VerifyPlan(
        http=tuple(parse_http_probe(p) for p in params.get("http_probes", ())),
        exec_commands=tuple(params.get("exec_probes", ())),
        host_commands=tuple(params.get("host_probes", ())),
        until_exit=bool(params.get("until_exit")),
        headers=tuple(h.lower() for h in params.get("headers", ())) or DEFAULT_HEADERS,
        ready_timeout=params.get("ready_timeout", 30.0),
        exit_timeout=params.get("exit_timeout") or 300.0,
        host_env=dict(os.environ),
    )
    return plan_from_trace(trace, plan) if trace is not None else plan


def _run_verify(engine: Engine, fat: str, micro: str, plan: VerifyPlan, show_all: bool) -> None:
    from slimmer.verify import VerifyFailed, render_checks, verify_images

    checks, seconds = verify_images(engine, fat, micro, plan, lambda m: log.info("%s", m))
    for line in render_checks(checks, fat, micro, show_all):
        click.echo(line)
    differ = [c for c in checks if not c.same]
    took = seconds["fat"] + seconds["micro"]
    if differ:
        raise VerifyFailed(
            f"verify: {len(differ)} of {len(checks)} checks differ between {fat} and {micro}",
            "slim explain REPORT PATH tells why a file is missing; --include keeps it",
        )
    click.echo(f"verify: {len(checks)} checks, {micro} answers like {fat} ({took:.1f}s)", err=True)


@cli.command()
@click.argument("fat")
@click.argument("micro")
@click.option(
    "--trace",
    "trace_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Replay this trace's probes and command (default .slim/<fat>.trace.json if there).",
)
@_verify_options
@handles_errors
def verify(fat: str, micro: str, trace_file: Path | None, show_all: bool, **params: Any) -> None:
    """Run FAT and MICRO the same way and compare their answers.

    HTTP: status, the chosen headers and a hash of the body; batch jobs
    (--until-exit): exit code, stdout and stderr. Prints the differences
    side by side; exit status 0 only when everything matches.
    """
    from slimmer.trace import Trace, default_trace_path

    path = trace_file or default_trace_path(fat)
    given = any(params.get(k) for k in ("http_probes", "exec_probes", "host_probes", "until_exit"))
    trace = Trace.load(path) if trace_file is not None or (path.exists() and not given) else None
    engine = _connect()
    try:
        _run_verify(engine, fat, micro, _verify_plan(params, trace), show_all)
    finally:
        engine.close()


@cli.command()
@click.argument("images", nargs=-1, required=True)
@click.option(
    "--format",
    "output",
    type=click.Choice(["text", "json", "markdown"]),
    default="text",
    show_default=True,
    help="markdown suits a CI job summary.",
)
@click.option(
    "--max-size",
    default=None,
    metavar="SIZE",
    help="Fail when an image after the first is larger (20MB, 13.5MiB, bytes).",
)
@click.option(
    "--min-ratio",
    type=float,
    default=None,
    metavar="N",
    help="Fail when an image after the first is not N times smaller than the first.",
)
@click.option(
    "--no-files", is_flag=True, help="Do not count files (saves a container run per image)."
)
@handles_errors
def compare(
    images: tuple[str, ...],
    output: str,
    max_size: str | None,
    min_ratio: float | None,
    no_files: bool,
) -> None:
    """Sizes, layers and files of IMAGES, and the ratio against the first.

    With gates, exit status 1 when one fails, and why; the gates apply to
    every image after the first (to the only one when there is one).
    """
    from slimmer.compare import check_gates, figures, parse_size, render

    limit = parse_size(max_size) if max_size else None
    engine = _connect()
    try:
        rows = figures(engine, list(images), default_cache_dir(), count_files=not no_files)
    finally:
        engine.close()
    failures = check_gates(rows, limit, min_ratio)
    click.echo(render(rows, output, failures))
    if failures:
        for failure in failures:
            click.echo(f"slim: gate failed: {failure}", err=True)
        sys.exit(int(ExitCode.FAILURE))


@cli.command()
@click.argument("report", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("path")
@handles_errors
def explain(report: Path, path: str) -> None:
    """Say why PATH is in the micro image of REPORT, or why it is not."""
    from slimmer.report import explain as explain_path
    from slimmer.report import load_report

    answer = explain_path(load_report(report), path)
    for line in answer.lines:
        click.echo(line)
    if not answer.kept:
        sys.exit(int(ExitCode.FAILURE))


def main() -> None:
    cli(prog_name="slim")
