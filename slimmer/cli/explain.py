"""`slim explain REPORT PATH`."""

from __future__ import annotations

from pathlib import Path

import click

from slimmer.cli.base import SlimCommand, echo, exit_with, handles_errors
from slimmer.errors import ExitCode


@click.command(cls=SlimCommand)
@click.argument("report", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("path")
@handles_errors
def explain(report: Path, path: str) -> None:
    """Say why PATH is in the micro image of REPORT, or why it is not."""
    from slimmer.report import explain as explain_path
    from slimmer.report import load_report

    answer = explain_path(load_report(report), path)
    for line in answer.lines:
        echo(line)
    if not answer.kept:
        exit_with(ExitCode.FAILURE)
