"""`slim trace IMAGE [-- CMD...]`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from slimmer.cli.base import (
    SlimCommand,
    connect,
    default_cache_dir,
    echo,
    handles_errors,
    output_file,
    summary,
)
from slimmer.cli.options import trace_options

if TYPE_CHECKING:
    from slimmer.trace import Trace
    from slimmer.tracer import TraceOptions


def print_trace_summary(trace: Trace, path: Path) -> None:
    from slimmer.trace import Discovery, HttpProbe

    created = sum(1 for f in trace.files if f.created)
    status = trace.exit_status
    exit_text = "?" if status is None else str(status)
    if trace.exit_signal:
        exit_text += f" (signal {trace.exit_signal})"
    summary(f"trace: {path}")
    summary(
        f"  files seen {len(trace.files)} ({created} created by the app), "
        f"watches {trace.watches}, events {trace.events}"
        + ("" if trace.complete else f", {trace.status.value.upper()}")
    )
    if trace.syscalls is not None and trace.syscalls.observed:
        missing = sum(1 for lookup in trace.lookups if not lookup.existed)
        summary(f"  lookups seen at the system call {len(trace.lookups)} ({missing} missing)")
    elif trace.syscalls is not None:
        summary(f"  no syscall observation: {trace.syscalls.reason}")
    times = ", ".join(f"{k} {v:.1f}s" for k, v in trace.seconds.items())
    summary(f"  app exit {exit_text}; {times}")
    crawled: dict[str, int] = {}
    for probe in trace.probes:
        if isinstance(probe.probe, HttpProbe) and probe.probe.found_by is Discovery.CRAWL:
            outcome = probe.answer.outcome()
            crawled[outcome] = crawled.get(outcome, 0) + 1
            continue
        summary(f"  probe {probe.probe.label()}: {probe.answer.outcome()}")
    if crawled:
        counts = ", ".join(f"{outcome} x{count}" for outcome, count in sorted(crawled.items()))
        summary(f"  crawl: {sum(crawled.values())} pages ({counts})")


@click.command(cls=SlimCommand)
@click.argument("image")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the trace (default .slim/<image>.trace.json).",
)
@handles_errors
@trace_options
def trace(image: str, output: Path | None, trace_options: TraceOptions) -> None:
    """Run IMAGE's app under the sensor and record every file it touches.

    The app is the image's ENTRYPOINT + CMD, or ENTRYPOINT + the COMMAND
    given after `--`. It runs as the image's USER with its ENV and WORKDIR;
    exposed TCP ports are published on 127.0.0.1, probed once the app
    answers, then the app is stopped with the image's STOPSIGNAL. No
    privileges and nothing in the image are needed.

    \b
      slim trace nginx-build -- /opt/nginx/sbin/nginx -g 'daemon off;'
      slim trace myjob:fat --until-exit -- /app/run.sh --once
    """
    from slimmer.trace import default_trace_path
    from slimmer.tracer import AppFailed, trace_image

    path = output_file(output, "-o") if output else default_trace_path(image)
    with connect() as engine:
        try:
            result = trace_image(engine, image, trace_options, default_cache_dir())
        except AppFailed as exc:
            if exc.trace is not None:
                exc.trace.save(path)
                echo(f"slim: the trace was saved to {path}", err=True)
            raise
    result.save(path)
    print_trace_summary(result, path)
