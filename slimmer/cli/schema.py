"""`slim schema NAME`."""

from __future__ import annotations

import click

from slimmer.cli.base import SlimCommand, handles_errors
from slimmer.schema import NAMES, shipped


@click.command(cls=SlimCommand)
@click.argument("name", type=click.Choice(NAMES))
@handles_errors
def schema(name: str) -> None:
    """Print the JSON Schema of one of slim's formats: the trace file, the
    build report, the JSON of compare, verify and deps, and the sensor's
    messages."""
    click.echo(shipped(name), nl=False)
