"""Benchmark: end-to-end `slim build` of the fat nginx image (trace first),
wall seconds split by phase, then `slim verify` of the pair.

Targets (issues 5 and 6): build under 5 s, verify under 5 s on this machine.

    python benchmarks/build.py [--image nginx-build] [--tag nginx:bench] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from tempfile import TemporaryDirectory

from slimmer.assemble import build_micro
from slimmer.builder import BuildOptions, SavedTrace
from slimmer.cli import default_cache_dir
from slimmer.engine import Engine
from slimmer.probes import ProbeRequest, parse_http_probe
from slimmer.tracer import TraceOptions, trace_image
from slimmer.verify import VerifyRequest, plan_from_trace, verify_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="nginx-build")
    parser.add_argument("--tag", default="slim-bench:micro")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    cache = default_cache_dir()
    probes = ProbeRequest(http=(parse_http_probe("/"), parse_http_probe("/missing")))
    options = TraceOptions(probes=probes, echo_app=False)
    totals, verifies = [], []
    with Engine.from_environment(os.environ) as engine:
        try:
            measure(engine, args, options, cache, totals, verifies)
        finally:
            engine.remove_image(args.tag)
    print(f"build median       {statistics.median(totals):.2f} s   (target < 5 s)")
    print(f"verify median      {statistics.median(verifies):.2f} s   (target < 5 s)")


def measure(
    engine: Engine,
    args: argparse.Namespace,
    options: TraceOptions,
    cache: Path,
    totals: list[float],
    verifies: list[float],
) -> None:
    trace_image(engine, args.image, options, cache)  # warm: bundle, page cache
    for run in range(1, args.runs + 1):
        with TemporaryDirectory() as scratch:
            started = time.monotonic()
            trace = trace_image(engine, args.image, options, cache)
            traced = time.monotonic() - started
            result = build_micro(
                engine,
                args.image,
                [SavedTrace(trace, Path(scratch) / "t.json")],
                BuildOptions(tags=(args.tag,), report=Path(scratch) / "r.json"),
                cache,
            )
            total = time.monotonic() - started
        totals.append(total)
        phases = {f"trace.{k}": v for k, v in trace.seconds.items()}
        phases |= {f"build.{k}": v for k, v in result.seconds.items()}
        print(f"run {run}: total {total:.2f} s  (trace {traced:.2f} s)")
        for name, value in phases.items():
            print(f"    {name:<16} {value:6.2f} s")
        started = time.monotonic()
        outcome = verify_images(
            engine, args.image, args.tag, plan_from_trace(trace, VerifyRequest())
        )
        verifies.append(time.monotonic() - started)
        checks = len(outcome.checks)
        print(
            f"    verify           {verifies[-1]:6.2f} s  ({checks} checks, same: {outcome.same})"
        )
    size = result.micro_size or 0
    print(f"micro size         {size} bytes ({size / 2**20:.2f} MiB)")


if __name__ == "__main__":
    main()
