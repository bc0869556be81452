"""Benchmark: the sensor's watch set-up on a generated image with 50,000
directories, and the event rate it keeps up with while the app opens 10,000
files per second.

Targets (issue 4): set-up under 3 s for 50k dirs; no overflow at 10k opens/s.

    python benchmarks/watch.py [--rate 10000] [--seconds 3]
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import tarfile
import tempfile
from pathlib import Path

from slimmer.cli import default_cache_dir
from slimmer.engine import Engine
from slimmer.tracer import TraceOptions, trace_image

HERE = Path(__file__).resolve().parent / "watch"
TAG = "slim-bench-watch:latest"


def build_image(engine: Engine) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        opener = Path(scratch) / "opener"
        subprocess.run(["gcc", "-O2", "-static", "-o", opener, HERE / "opener.c"], check=True)
        context = io.BytesIO()
        with tarfile.open(fileobj=context, mode="w") as tar:
            tar.add(HERE / "Dockerfile", arcname="Dockerfile")
            tar.add(opener, arcname="opener")
        context.seek(0)
        engine.build(context, TAG)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=10000)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    with Engine.from_environment(os.environ) as engine:
        build_image(engine)
        command = ["/usr/local/bin/opener", str(args.rate), str(args.seconds), "10000"]
        trace = trace_image(
            engine,
            TAG,
            TraceOptions(cmd=command, until_exit=True, echo_app=False),
            default_cache_dir(),
        )
    opened = sum(1 for f in trace.files if f.path.startswith("/data/files/"))
    app_seconds = trace.seconds.get("total", 0) - trace.seconds.get("setup", 0)
    print(f"directories watched  {trace.watches}")
    setup, watch = trace.seconds["setup"], trace.seconds["watch"]
    rate = trace.events / max(app_seconds, 0.001)
    print(f"watch set-up         {watch:.2f} s in the sensor (target < 3 s)")
    print(f"container to ready   {setup:.2f} s (create, copy the sensor in, start, watch)")
    print(f"events               {trace.events} in ~{app_seconds:.1f} s ({rate:.0f}/s)")
    print(
        f"opens asked          {args.rate}/s for {args.seconds:.0f} s; distinct files seen {opened}"
    )
    print(f"overflow             {'YES, trace incomplete' if not trace.complete else 'no'}")


if __name__ == "__main__":
    main()
