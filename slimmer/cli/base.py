"""What every command shares: the error wrapper that turns errors into one
line, a hint and an exit status; logging to stderr; the host settings that
only the command line may read (environment, cache dir)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from slimmer.engine import Engine
from slimmer.errors import ExitCode, SlimError

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


def setup_logging(debug: bool, quiet: bool) -> None:
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    logger = logging.getLogger(LOGGER)
    if not any(isinstance(h, CurrentStderr) for h in logger.handlers):
        handler = CurrentStderr()
        handler.setFormatter(logging.Formatter("slim: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)


def fail(message: str, hint: str | None, code: int) -> None:
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
            fail(exc.message, exc.hint, int(exc.exit_code))
        except KeyboardInterrupt:
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
    """The engine of the environment (DOCKER_HOST and friends). Runs are
    labelled with $SLIM_RUN_PREFIX in front of their id, so that a CI job
    can find (and clean up) exactly its own containers."""
    return Engine.connect(run_prefix=os.environ.get("SLIM_RUN_PREFIX", ""))


def host_env() -> dict[str, str]:
    """The environment host probes start from."""
    return dict(os.environ)


def exit_with(code: ExitCode) -> None:
    sys.exit(int(code))
