"""The `slim` command line: parse, call, print. No logic lives here."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from slimmer import __version__
from slimmer.errors import ExitCode, NotFound, SlimError

log = logging.getLogger("slimmer")

F = TypeVar("F", bound=Callable[..., Any])


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
      slim deps --root DIR PATH...   the ELF closure of files in a root dir
    """
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="slim: %(message)s", stream=sys.stderr)


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
    required=True,
    help="Directory that holds the image's file system (its /).",
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
@click.option("--cwd", default="/", show_default=True, help="Working directory for relative paths.")
@click.option(
    "--runtime-extras",
    is_flag=True,
    help="Add what glibc dlopens itself: NSS modules from nsswitch.conf, libgcc_s.",
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
    root: str,
    as_json: bool,
    env_pairs: tuple[str, ...],
    cwd: str,
    runtime_extras: bool,
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

    fs = RootFS(root)
    for path in paths:
        if not fs.exists(path, cwd=cwd):
            raise NotFound(
                f"{path}: not found inside {root}", "paths are inside the root, e.g. /usr/bin/env"
            )
    loader = Loader(
        fs,
        env=_parse_env(env_pairs),
        cwd=cwd,
        use_ld_cache=not no_ld_cache,
        as_if_ldconfig=as_if_ldconfig,
    )
    closure = loader.closure(paths, runtime_extras=runtime_extras)
    if as_json:
        click.echo(json.dumps(closure_to_json(closure, root), indent=2))
    else:
        for link_map in closure.link_maps:
            for line in render_tree(link_map):
                click.echo(line)
        for skipped in closure.skipped:
            click.echo(f"{skipped.path}: skipped ({skipped.reason})")
    if closure.missing:
        sys.exit(int(ExitCode.FAILURE))


def main() -> None:
    cli(prog_name="slim")
