"""`slim build IMAGE -t TAG`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import click

from slimmer.cli.base import SlimCommand, connect, default_cache_dir, handles_errors, summary
from slimmer.cli.options import build_options, trace_options
from slimmer.cli.trace import print_trace_summary
from slimmer.cli.verify import report_verified

if TYPE_CHECKING:
    from slimmer.builder import BuildOptions

log = logging.getLogger(__name__)


@click.command("build", cls=SlimCommand)
@click.argument("image")
@handles_errors
@trace_options
@build_options
def build_command(image: str, options: BuildOptions) -> None:
    """Build a micro image of IMAGE from what its app touched.

    The file set is the trace ∪ the ELF closure of every traced ELF file and
    the entrypoint ∪ --include − --exclude, plus the symlinks on the way,
    parent directories and the directories the app wrote into (empty). Files
    the app created while traced are never copied. The micro image keeps
    ENTRYPOINT, CMD, ENV, WORKDIR, USER, EXPOSE, LABELs, STOPSIGNAL,
    HEALTHCHECK and VOLUMEs, owners, modes, setuid bits and hard links.

    \b
      slim build nginx-build -t nginx:micro
      slim build app:fat -t app:micro --trace a.json --trace b.json --include /etc/ssl/certs
    """
    made = ", ".join(options.tags) if options.context_only is None else options.context_only
    log.info("making %s from %s", made, image)  # the first line, before the engine's code loads
    from slimmer.builder import build

    with connect() as engine:
        outcome = build(engine, image, options, default_cache_dir())
    from slimmer.report import human_size  # loaded by the build by now

    if outcome.traced is not None:
        print_trace_summary(outcome.traced.trace, outcome.traced.path)
    result = outcome.result
    if options.context_only is not None:
        summary(f"context: {options.context_only}")
    else:
        ratio = result.fat_size / result.micro_size if result.micro_size else 0
        layers = len(result.report.layers)
        summary(
            f"{image} {human_size(result.fat_size)} -> {options.tag} "
            f"{human_size(result.micro_size or 0)} ({ratio:.0f}x smaller, "
            f"{layers} layer{'s' if layers != 1 else ''})"
        )
    for digest in result.digests:
        summary(f"pushed: {digest}")
    for output in options.outputs:
        summary(f"written: {output.describe()}")
    if result.report.strip is not None:
        summary(f"--strip: {human_size(result.report.strip.saved)} less")
    summary(f"report: {result.report_path}")
    if result.report.sbom:
        summary(f"sbom: {result.report.sbom}")
    if outcome.verified is not None:
        report_verified(outcome.verified, show_all=False)
    if result.micro_id:
        click.echo(result.micro_id)  # the one line on stdout, as docker build -q prints
