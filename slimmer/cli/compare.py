"""`slim compare IMAGE...`."""

from __future__ import annotations

import click

from slimmer.cli.base import (
    RATIO,
    SlimCommand,
    connect,
    default_cache_dir,
    echo,
    exit_with,
    handles_errors,
)
from slimmer.cli.options import format_option
from slimmer.errors import ExitCode


@click.command(cls=SlimCommand)
@click.argument("images", nargs=-1, required=True)
@format_option("markdown suits a CI job summary; json follows slim schema compare.")
@click.option(
    "--max-size",
    default=None,
    metavar="SIZE",
    help="Fail when an image after the first is larger (20MB, 13.5MiB, bytes).",
)
@click.option(
    "--min-ratio",
    type=RATIO,
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
    with connect() as engine:
        rows = figures(engine, list(images), default_cache_dir(), count_files=not no_files)
    failures = check_gates(rows, limit, min_ratio)
    echo(render(rows, output, failures))
    if failures:
        for failure in failures:
            echo(f"slim: gate failed: {failure}", err=True)
        exit_with(ExitCode.FAILURE)
