"""`slim deps (--root DIR | --image IMAGE) PATH...`."""

from __future__ import annotations

import click

from slimmer import wire
from slimmer.cli.base import (
    SlimCommand,
    connect,
    default_cache_dir,
    echo,
    exit_with,
    handles_errors,
)
from slimmer.errors import ExitCode


def _parse_env(pairs: tuple[str, ...]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--env")
        env[name] = value
    return env


@click.command(cls=SlimCommand)
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
    from slimmer.deps import DepsSettings, closure_in_image, closure_in_root

    if (root is None) == (image is None):
        raise click.UsageError("give exactly one of --root DIR and --image IMAGE")
    settings = DepsSettings(
        env=_parse_env(env_pairs),
        cwd=cwd,
        runtime_extras=runtime_extras,
        gconv=gconv,
        use_ld_cache=not no_ld_cache,
        as_if_ldconfig=as_if_ldconfig,
    )
    if image is not None:
        with connect() as engine:
            outcome = closure_in_image(engine, image, paths, settings, default_cache_dir())
    else:
        outcome = closure_in_root(str(root), paths, settings)
    report = outcome.report
    if as_json:
        click.echo(wire.dumps(report, indent=2), nl=False)
    else:
        for line in outcome.tree:
            echo(line)
        for skipped in report.skipped:
            echo(f"{skipped.path}: skipped ({skipped.reason})")
    if report.missing:
        exit_with(ExitCode.FAILURE)
