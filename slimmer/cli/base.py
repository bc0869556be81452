"""What every command shares: the error wrapper that turns errors into one
line, a hint and an exit status; logging to stderr; the host settings that
only the command line may read (environment, cache dir)."""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import re
import signal
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from slimmer import progress
from slimmer.endpoint import choose_endpoint
from slimmer.errors import ExitCode, SlimError, Terminated
from slimmer.outputs import check_output
from slimmer.terminal import visible

if TYPE_CHECKING:
    from slimmer.engine import Engine

F = TypeVar("F", bound=Callable[..., Any])

LOGGER = "slimmer"


class CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Logs to whatever sys.stderr is at the time (click's runner swaps it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        return

    def emit(self, record: logging.LogRecord) -> None:
        display = progress.current()
        if isinstance(display, progress.LiveBar):
            display.interrupt(lambda: super(CurrentStderr, self).emit(record))
        else:
            super().emit(record)


class VisibleFormatter(logging.Formatter):
    """Log lines as a terminal shows them safely (slimmer.terminal): the
    app's output and everything else from a container is in them."""

    def format(self, record: logging.LogRecord) -> str:
        return visible(super().format(record))


def echo(text: str, *, err: bool = False) -> None:
    """A line of text output, with control characters made visible."""
    click.echo(visible(text), err=err)


GLOBAL_OPTIONS = ("-q", "--quiet", "--debug", "-H", "--host", "--context", "--published-host")


class SlimCommand(click.Command):
    """A command whose unknown options are usage errors (exit 2) that say
    what to do: slim's own options go before the command, the app's after
    `--`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            name = exc.option_name
            if name in GLOBAL_OPTIONS:
                exc.message = f"{name} is an option of slim itself"
                exc.hint = f"give it before the command: slim {name} {self.name} ..."
            else:
                exc.message = f"no such option: {name}"
                if exc.possibilities:
                    exc.message += f" (did you mean {', '.join(sorted(exc.possibilities))}?)"
                if any(param.name == "command" for param in self.params):
                    exc.hint = (
                        f"options meant for the app go after --, "
                        f"e.g. slim {self.name} IMAGE -- /app {name}"
                    )
            raise


TERMINATING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def ignore_further_signals() -> None:
    """Cleaned up and leaving: one more Ctrl-C (or SIGTERM) must not turn the
    exit status into a death by signal while the interpreter shuts down."""
    for number in (signal.SIGINT, *TERMINATING_SIGNALS):
        signal.signal(number, signal.SIG_IGN)


def _terminate(number: int, _frame: object) -> None:
    raise Terminated(number)


def run_cli(group: click.Group) -> None:
    """Run the command line: click's usage errors in slim's own words (one
    line, a hint, exit 2), everything else through handles_errors. SIGTERM
    and SIGHUP clean up like Ctrl-C: every container slim made is removed."""
    for number in TERMINATING_SIGNALS:
        signal.signal(number, _terminate)
    try:
        group.main(prog_name="slim", standalone_mode=False)
    except click.UsageError as exc:
        hint = getattr(exc, "hint", None)
        if hint is None and exc.ctx is not None:
            hint = f"slim {exc.ctx.command_path.removeprefix('slim ')} --help".replace(
                "slim slim", "slim"
            )
            hint = f"see {hint}"
        fail(exc.format_message(), hint, int(ExitCode.USAGE))
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        ignore_further_signals()
        click.echo("slim: interrupted", err=True)
        sys.exit(int(ExitCode.INTERRUPTED))
    except click.ClickException as exc:
        fail(exc.format_message(), None, exc.exit_code)


class NonNegative(click.ParamType):
    """A finite number, 0 or more (nan, inf and -5 are refused)."""

    def __init__(self, unit: str) -> None:
        self.name = unit
        self.unit = unit

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of {self.unit}", param, ctx)
        if not math.isfinite(number) or number < 0:
            self.fail(f"{value!r} is not a number of {self.unit} (0 or more)", param, ctx)
        return number


SECONDS = NonNegative("seconds")
RATIO = NonNegative("times")


def output_file(path: Path, option: str) -> Path:
    """Check, before anything runs, that the file an option names can be
    written (slimmer.outputs: its directory exists and slim can make a file
    there, or it is a FIFO or device slim can write into)."""
    check_output(path, option)
    return path


def quiet() -> bool:
    """Whether -q was given: summaries are left out, errors stay."""
    context = click.get_current_context(silent=True)
    return bool(context and context.find_root().params.get("quiet"))


def summary(line: str) -> None:
    """A line of a command's summary, on stderr, unless -q."""
    if not quiet():
        echo(line, err=True)


def setup_progress(quiet: bool) -> None:
    """How long steps show progress: a live bar on a terminal, a plain line
    every few seconds otherwise (CI logs), nothing with -q."""
    if quiet:
        progress.use(progress.Silent())
    elif sys.stderr.isatty():
        progress.use(progress.LiveBar())
    else:
        progress.use(progress.PlainLines())


def setup_logging(debug: bool, quiet: bool) -> None:
    """INFO (progress, summaries) by default; -q leaves errors only; --debug all."""
    level = logging.DEBUG if debug else logging.ERROR if quiet else logging.INFO
    logger = logging.getLogger(LOGGER)
    if not any(isinstance(h, CurrentStderr) for h in logger.handlers):
        handler = CurrentStderr()
        handler.setFormatter(VisibleFormatter("slim: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)


def fail(message: str, hint: str | None, code: int) -> None:
    echo(f"slim: error: {message}", err=True)
    if hint:
        echo(f"slim: hint: {hint}", err=True)
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
            fail(exc.message, exc.hint, int(exc.exit_code))
        except Terminated as exc:
            ignore_further_signals()
            name = signal.Signals(exc.signal_number).name
            click.echo(f"slim: stopped by {name}; cleaned up", err=True)
            sys.exit(128 + exc.signal_number)
        except KeyboardInterrupt:
            ignore_further_signals()
            click.echo("slim: interrupted", err=True)
            sys.exit(int(ExitCode.INTERRUPTED))
        except OSError as exc:
            if debug:
                raise
            where = f" ({exc.filename})" if exc.filename else ""
            fail(
                f"{exc.strerror or exc}{where}", "run with --debug for details", int(ExitCode.ERROR)
            )

    return wrapper  # type: ignore[return-value]


def default_cache_dir() -> Path:
    """Where the sensor bundle is cached: $SLIM_CACHE_DIR, else
    $XDG_CACHE_HOME/slim, else ~/.cache/slim."""
    if os.environ.get("SLIM_CACHE_DIR"):
        return Path(os.environ["SLIM_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "slim"


def connect() -> Engine:
    """The engine chosen by -H/--host, --context or the environment
    (DOCKER_HOST, DOCKER_CONTEXT, the docker CLI's current context), as the
    docker CLI chooses it. Runs are labelled with $SLIM_RUN_PREFIX in front
    of their id, so that a CI job can find (and clean up) exactly its own
    containers."""
    from slimmer.engine import Engine  # the docker SDK: only for commands that use an engine

    context = click.get_current_context(silent=True)
    options = context.find_root().params if context else {}
    endpoint = choose_endpoint(
        options.get("engine_host"), options.get("engine_context"), os.environ
    )
    return Engine.connect(
        endpoint,
        run_prefix=os.environ.get("SLIM_RUN_PREFIX", ""),
        published_host=options.get("published_host"),
    )


_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})")


def check_published_host(
    _context: click.Context, _param: click.Parameter, value: str | None
) -> str | None:
    """An address or a host name, without scheme or port."""
    if value is None or value == "":
        return None
    try:
        return str(ipaddress.ip_address(value.strip("[]")))
    except ValueError:
        pass
    if not _HOST_NAME.fullmatch(value):
        raise click.BadParameter(
            f"{value!r} is not an address or a host name (no scheme, no port)",
            param_hint="--published-host",
        )
    return value


def host_env() -> dict[str, str]:
    """The environment host probes start from."""
    return dict(os.environ)


def exit_with(code: ExitCode) -> None:
    sys.exit(int(code))
