"""`slim prune`."""

from __future__ import annotations

import os

import click

from slimmer.cli.base import SlimCommand, connect, handles_errors, summary


@click.command(cls=SlimCommand)
@handles_errors
def prune() -> None:
    """Remove what slim keeps on the engine: the cached sensor (a volume per
    slim version, made on first use) and the containers of runs whose slim
    process ended without removing them. Runs going on keep theirs; a
    container of another machine's run is left (its process cannot be seen
    from here). With SLIM_RUN_PREFIX set, only what runs with that prefix
    made. Prints what it removed, one `KIND NAME` a line.
    """
    from slimmer.prune import prune as prune_engine

    with connect() as engine:
        outcome = prune_engine(engine, os.environ.get("SLIM_RUN_PREFIX", ""))
    for item in outcome.removed:
        click.echo(f"{item.kind} {item.name}")
    for item in outcome.kept:
        summary(f"kept {item.kind} {item.name} ({item.why})")
    summary(f"prune: removed {len(outcome.removed)}, kept {len(outcome.kept)}")
