"""The `slim` command line. One module per command: it parses, calls one
flow function, and prints; the flows (tracer, builder, verify, compare,
deps) own the policy and the engine use."""

from __future__ import annotations

import click

from slimmer import __version__
from slimmer.cli.base import default_cache_dir, run_cli, setup_logging
from slimmer.cli.build import build_command
from slimmer.cli.compare import compare
from slimmer.cli.deps import deps
from slimmer.cli.explain import explain
from slimmer.cli.schema import schema
from slimmer.cli.trace import trace
from slimmer.cli.verify import verify


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="slim")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors on stderr.")
def cli(debug: bool, quiet: bool) -> None:
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
    """
    setup_logging(debug, quiet)


for command in (trace, build_command, verify, compare, explain, deps, schema):
    cli.add_command(command)


def main() -> None:
    run_cli(cli)


__all__ = ["cli", "default_cache_dir", "main"]
