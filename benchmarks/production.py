"""Benchmark: what each production feature of `slim build` costs (issue 14):
build seconds by phase and the micro image's size, for the same trace, with
the features added one by one:

    plain      --no-layers --no-package-records (the package database is
               still read: owners and the SBOM need it)
    records    + package records and os-release
    layers     + layers by update risk (the default build)
    strip      + --strip
    init       + --init

Each configuration is built --runs times; medians are printed. Phases:
sensor.* are the collecting sensor's own steps (packages: reading the
database and the kept packages; select: the file set; strip: planning
--strip; tar: writing the rootfs tar), layers the host's split into layer
tars, build the engine's docker build, sbom the CycloneDX file.

    python benchmarks/production.py [--image nginx-build] [--runs 3]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
from pathlib import Path

from slimmer.assemble import build_micro
from slimmer.builder import BuildOptions, SavedTrace
from slimmer.cli.base import default_cache_dir
from slimmer.engine import Engine
from slimmer.probes import ProbeRequest, parse_http_probe
from slimmer.tracer import TraceOptions, trace_image

CONFIGS: dict[str, dict[str, bool]] = {
    "plain": {"layers": False, "package_records": False},
    "records": {"layers": False},
    "layers": {},
    "strip": {"strip": True},
    "init": {"strip": True, "init": True},
}
PHASES = (
    "sensor.packages", "sensor.select", "sensor.strip", "sensor.tar", "collect", "layers",
    "build", "sbom", "total",
)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="nginx-build")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    cache = default_cache_dir()
    with (
        Engine.from_environment(os.environ) as engine,
        tempfile.TemporaryDirectory(prefix="slim-prod-") as tmp,
    ):
        scratch = Path(tmp)
        probes = ProbeRequest(http=(parse_http_probe("/"),))
        trace = trace_image(engine, args.image, TraceOptions(probes=probes, echo_app=False), cache)
        trace.save(scratch / "trace.json")
        saved = SavedTrace(trace, scratch / "trace.json")
        rows = []
        tag = "slim-bench-production:micro"
        try:
            for name, features in CONFIGS.items():
                options = BuildOptions(
                    tags=(tag,),
                    report=scratch / "report.json",
                    sbom=scratch / "sbom.json",
                    **features,  # type: ignore[arg-type]
                )
                runs = [
                    build_micro(engine, args.image, [saved], options, cache)
                    for _ in range(args.runs)
                ]
                seconds = {
                    phase: statistics.median(r.seconds.get(phase, 0.0) for r in runs)
                    for phase in PHASES
                }
                rows.append((name, runs[-1].micro_size or 0, len(runs[-1].report.layers), seconds))
        finally:
            engine.remove_image(tag)
    print(f"\n{args.image}, median of {args.runs} builds from one trace (seconds)\n")
    header = f"{'config':<8} {'size MB':>8} {'layers':>6} " + " ".join(
        f"{p.removeprefix('sensor.'):>8}" for p in PHASES
    )
    print(header)
    print("-" * len(header))
    for name, size, layers, seconds in rows:
        print(
            f"{name:<8} {size / 1e6:8.2f} {layers:6d} "
            + " ".join(f"{seconds[p]:8.3f}" for p in PHASES)
        )
    print(
        "\n(packages, select, strip, tar: inside the collecting container; collect includes them)"
    )


if __name__ == "__main__":
    main()
