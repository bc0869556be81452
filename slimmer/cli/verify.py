"""`slim verify FAT MICRO`."""

from __future__ import annotations

from pathlib import Path

import click

from slimmer import wire
from slimmer.cli.base import SlimCommand, connect, echo, handles_errors, summary
from slimmer.cli.options import format_option, verify_options
from slimmer.trace import Trace, default_trace_path
from slimmer.verify import (
    VerifyFailed,
    VerifyOutcome,
    VerifyRequest,
    plan_from_request,
    plan_from_trace,
    render_checks,
    render_markdown,
    verify_images,
)


def report_verified(outcome: VerifyOutcome, show_all: bool, output: str = "text") -> None:
    """Print the checks; raise VerifyFailed (exit 1) when any differs, after
    a line on stderr for each check that failed."""
    if output == "json":
        click.echo(wire.dumps(outcome), nl=False)
    elif output == "markdown":
        echo("\n".join(render_markdown(outcome, show_all)))
    else:
        for line in render_checks(list(outcome.checks), outcome.fat, outcome.micro, show_all):
            echo(line)
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
    help="Replay this trace's probes and command (default .slim/<fat>.trace.json if there).",
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
    """Run FAT and MICRO the same way and compare their answers.

    HTTP: status, the chosen headers and a hash of the body; batch jobs
    (--until-exit): exit code, stdout and stderr. Prints the differences
    side by side; exit status 0 only when everything matches.
    """
    path = trace_file or default_trace_path(fat)
    use_trace = trace_file is not None or (path.exists() and not request.gives_probes())
    plan = plan_from_trace(Trace.load(path), request) if use_trace else plan_from_request(request)
    with connect() as engine:
        outcome = verify_images(engine, fat, micro, plan)
    report_verified(outcome, show_all, output)
