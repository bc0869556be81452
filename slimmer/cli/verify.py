"""`slim verify FAT MICRO`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import click

from slimmer import wire
from slimmer.cli.base import SlimCommand, connect, echo, handles_errors, summary
from slimmer.cli.options import format_option, verify_options

if TYPE_CHECKING:
    from slimmer.engine import Engine
    from slimmer.trace import Trace
    from slimmer.verify import VerifyOutcome, VerifyRequest

log = logging.getLogger(__name__)


def report_verified(outcome: VerifyOutcome, show_all: bool, output: str = "text") -> None:
    """Print the checks; raise VerifyFailed (exit 1) when any differs, after
    a line on stderr for each check that failed."""
    from slimmer.verify import VerifyFailed, render_checks, render_markdown

    if output == "json":
        click.echo(wire.dumps(outcome), nl=False)
    elif output == "markdown":
        echo("\n".join(render_markdown(outcome, show_all)))
    else:
        for line in render_checks(list(outcome.checks), outcome.fat, outcome.micro, show_all):
            echo(line)
    for note in outcome.notes:
        echo(f"slim: {note}", err=True)
    differ = outcome.differing()
    for check in differ:
        echo(
            f"slim: check failed: {check.probe} {check.aspect}: {outcome.fat} {check.fat}, "
            f"{outcome.micro} {check.micro}",
            err=True,
        )
    if differ:
        raise VerifyFailed(
            f"verify: {len(differ)} of {len(outcome.checks)} checks differ between "
            f"{outcome.fat} and {outcome.micro}",
            "slim explain REPORT PATH tells why a file is missing; --include keeps it",
        )
    took = sum(outcome.seconds.values())
    summary(
        f"verify: {len(outcome.checks)} checks, {outcome.micro} answers like {outcome.fat} "
        f"({took:.1f}s)"
    )


@click.command(cls=SlimCommand)
@click.argument("fat")
@click.argument("micro")
@click.option(
    "--trace",
    "trace_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Replay this trace's probes and command (default .slim/<fat>.trace.json when it is "
    "a trace of FAT).",
)
@click.option("--all", "show_all", is_flag=True, help="Show matching checks too.")
@format_option(
    "json: every check, schema slim.verify/1 (slim schema verify); markdown suits a CI job summary."
)
@handles_errors
@verify_options
def verify(
    fat: str,
    micro: str,
    trace_file: Path | None,
    show_all: bool,
    output: str,
    request: VerifyRequest,
) -> None:
    """Run FAT and MICRO the same way and compare what the engine observes.

    The probes are the trace's (default .slim/<FAT>.trace.json), the ones
    given, or, with neither, the ones a trace makes by default: GET / on each
    exposed TCP port and the HEALTHCHECK. HTTP: status, the chosen headers
    and a hash of the body; commands and batch jobs (--until-exit): exit
    code, stdout and stderr; the health status the engine gives each
    container; whether the app still runs after the probes. Prints the
    differences side by side; exit status 0 only when everything matches,
    1 when the micro image differs (or its app dies), 6 when the fat image
    does not answer as its probes expect.
    """
    from slimmer.verify import plan_from_request, plan_from_trace, verify_images

    with connect() as engine:
        trace = _trace_for(engine, fat, trace_file)
        plan = plan_from_trace(trace, request) if trace else plan_from_request(request)
        outcome = verify_images(engine, fat, micro, plan)
    report_verified(outcome, show_all, output)


def _trace_for(engine: Engine, fat: str, given: Path | None) -> Trace | None:
    """The trace whose probes verify replays: the one given, else FAT's
    default trace when it is a trace of this very image (as build chooses);
    probes given on the command line replace the trace's of their kind."""
    from slimmer.trace import Trace, default_trace_path

    if given is not None:
        return Trace.load(given)
    path = default_trace_path(fat)
    if not path.exists():
        return None
    trace = Trace.load(path)
    if trace.image_id and trace.image_id != engine.image_attrs(fat).get("Id"):
        log.info("%s is a trace of an older %s: not used", path, fat)
        return None
    log.info("replaying the probes of %s", path)
    return trace
