"""Benchmark: what the syscall layer costs in a real trace. Traces two jobs
in a container of the pyapp fixture (Debian with python3) with `slim trace
--until-exit`, with the syscall layer and without it (--no-syscalls:
inotify alone), interleaved, and prints the best app time of each and the
ratio (the best, not the mean: other load on the machine only adds time).

    process-heavy: a shell loop of N short processes (/bin/true)
    import-heavy:  M python3 starts that import a good part of the stdlib

Target (issue 12): the syscall layer costs at most 1.5x inotify alone.

    python benchmarks/syscall_trace.py [--processes 2000] [--starts 20] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from slimmer.cli import default_cache_dir
from slimmer.engine import Engine
from slimmer.tracer import TraceOptions, trace_image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # one way to build fixtures/ images, shared with the tests
from tests.helpers.images import context_of  # noqa: E402

IMAGE = "slim-bench-pyapp:latest"
IMPORTS = (
    "import json, email.parser, email.message, http.client, urllib.request, "
    "xml.etree.ElementTree, asyncio, decimal, logging, argparse, unittest, "
    "sqlite3, csv, zipfile, tarfile, pathlib, dataclasses, typing"
)


def app_seconds(engine: Engine, command: list[str], syscalls: bool) -> float:
    options = TraceOptions(
        cmd=command, entrypoint=[], user="0", until_exit=True, echo_app=False, syscalls=syscalls
    )
    trace = trace_image(engine, IMAGE, options, default_cache_dir())
    if trace.exit_status != 0:
        raise SystemExit(f"the job failed: exit {trace.exit_status}")
    if syscalls and not (trace.syscalls and trace.syscalls.observed):
        raise SystemExit(f"the syscall layer did not run: {trace.syscalls}")
    return trace.seconds["app"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2000)
    parser.add_argument("--starts", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    jobs = {
        f"{args.processes} short processes": [
            "/bin/sh",
            "-c",
            f"i=0; while [ $i -lt {args.processes} ]; do /bin/true || exit 1; i=$((i+1)); done",
        ],
        f"{args.starts} import-heavy python starts": [
            "/bin/sh",
            "-c",
            f'i=0; while [ $i -lt {args.starts} ]; do python3 -c "{IMPORTS}" || exit 1;'
            " i=$((i+1)); done",
        ],
    }
    with Engine.from_environment(os.environ) as engine:
        engine.build(context_of(REPO / "fixtures" / "pyapp"), IMAGE)
        for name, command in jobs.items():
            best = {True: float("inf"), False: float("inf")}
            for _ in range(args.repeat):
                for syscalls in (False, True):
                    best[syscalls] = min(best[syscalls], app_seconds(engine, command, syscalls))
            ratio = best[True] / best[False]
            print(
                f"{name:<32} inotify {best[False]:6.2f} s   inotify+syscalls "
                f"{best[True]:6.2f} s   {ratio:.2f}x   (target <= 1.5x)"
            )


if __name__ == "__main__":
    main()
