"""The `slim` command line. One module per command: it parses, calls one
flow function, and prints; the flows (tracer, builder, verify, compare,
deps) own the policy and the engine use."""

from __future__ import annotations

import click

from slimmer import __version__
from slimmer.cli.base import (
    check_published_host,
    default_cache_dir,
    run_cli,
    setup_logging,
    setup_progress,
)
from slimmer.cli.build import build_command
from slimmer.cli.compare import compare
from slimmer.cli.deps import deps
from slimmer.cli.explain import explain
from slimmer.cli.prune import prune
from slimmer.cli.schema import schema
from slimmer.cli.trace import trace
from slimmer.cli.verify import verify


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="slim")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr (and results on stdout).")
@click.option(
    "-H",
    "--host",
    "engine_host",
    default=None,
    metavar="URL",
    help="The engine (unix://, tcp://, ssh://), as docker -H. Default: DOCKER_HOST, "
    "else the docker context, else the local socket.",
)
@click.option(
    "--context",
    "engine_context",
    default=None,
    metavar="NAME",
    help="The docker context to use (docker context ls), as docker --context.",
)
@click.option(
    "--published-host",
    default=None,
    envvar="SLIM_PUBLISHED_HOST",
    callback=check_published_host,
    metavar="ADDRESS",
    help="Where the engine's published ports are reached from here, for an engine behind "
    "a tunnel ($SLIM_PUBLISHED_HOST). Default: 127.0.0.1 for a local engine, the "
    "engine's host otherwise.",
)
def cli(
    debug: bool,
    quiet: bool,
    engine_host: str | None,
    engine_context: str | None,
    published_host: str | None,
) -> None:
    """slim makes micro container images from fat build images.

    It runs the application inside the fat image, records every file it
    opens, adds what the dynamic loader needs, and builds a FROM scratch
    image with only those files.

    \b
      slim trace IMAGE [-- CMD...]   run the app under the sensor, record files
      slim build IMAGE -t TAG        build the micro image from the trace
      slim verify FAT MICRO          replay the probes on both, compare answers
      slim compare IMAGE...          sizes, layers, files; gates for CI
      slim explain REPORT PATH       why a path is (not) in the micro image
      slim deps --root DIR PATH...   the ELF closure of files in a root dir
      slim schema NAME               the JSON Schema of a file slim writes
      slim prune                     remove what slim keeps on the engine
    """
    setup_logging(debug, quiet)
    setup_progress(quiet)


for command in (trace, build_command, verify, compare, explain, deps, schema, prune):
    cli.add_command(command)


def main() -> None:
    run_cli(cli)


__all__ = ["cli", "default_cache_dir", "main"]
