"""Benchmark: what the coverage rules of `slim build` cost (issue 22): the
micro image's size for each fixture app, from one trace, with every rule,
with none, and without each one:

    content    the app's own files below what it read (--no-app-content)
    siblings   the programs beside one it ran (--no-program-siblings)
    closure    the code closure of interpreted code (--no-code-closure)
    data       the keyed data sets (--no-keep-data all)

and, with --today DIR (a checkout of the code before these rules, e.g.
`git archive main | tar -x -C DIR`), the size that code builds from the
same trace. The apps are the fixture apps of the coverage tests (traced
with the one route their tests trace) and the other fixture apps, which
need none of the rules: what the rules cost where they add nothing.

Aim (issue 22): every class covered (the tests) at no more than 15% more
bytes per image, median over the apps, than today.

    python benchmarks/coverage.py [--apps docsite,pyroutes,...] [--today DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from slimmer.assemble import build_micro
from slimmer.builder import BuildOptions, SavedTrace
from slimmer.cli.base import default_cache_dir
from slimmer.engine import Engine
from slimmer.probes import ProbeRequest, parse_http_probe
from slimmer.tracer import TraceOptions, trace_image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # one way to build fixtures/ images, shared with the tests
from tests.helpers.images import context_of  # noqa: E402

log = logging.getLogger("coverage")
T = TypeVar("T")


@dataclass(frozen=True)
class App:
    name: str
    fixture: str | None  # fixtures/<dir> it is built from (None: the fat nginx-build)
    until_exit: bool = False
    http: tuple[str, ...] = ()  # the probes, instead of the default GET /

    @property
    def image(self) -> str:
        return f"slim-fixture-{self.fixture}:latest" if self.fixture else "nginx-build"


APPS = {
    app.name: app
    for app in (
        App("docsite", "docsite"),
        App("cgisite", "cgisite", http=("/cgi-bin/hello.sh",)),
        App("pyroutes", "pyroutes"),
        App("noderoutes", "noderoutes"),
        App("cmdjob", "cmdjob", until_exit=True),
        App("nginx", None),
        App("lockserver", "lockserver"),
        App("pyapp", "pyapp"),
        App("prodpyjob", "prodpyjob", until_exit=True),
        App("prodperl", "prodperl", until_exit=True),
        App("shelljob", "shelljob", until_exit=True),
        App("cplugin", "cplugin", until_exit=True),
    )
}
NONE = {"app_content": False, "program_siblings": False, "code_closure": False, "keep_data": ()}
CONFIGS: dict[str, dict[str, object]] = {
    "all": {},
    "none": NONE,
    "content": {"app_content": False},
    "siblings": {"program_siblings": False},
    "closure": {"code_closure": False},
    "data": {"keep_data": ()},
}


@dataclass
class Row:
    app: str
    sizes: dict[str, int] = field(default_factory=dict)


def attempts(what: str, step: Callable[[], T]) -> T:
    """A step tried up to three times: the engine is shared, and another
    session's clean-up can remove what a build or a trace needs mid-run."""
    for attempt in range(1, 4):
        try:
            return step()
        except Exception as exc:
            log.warning("%s failed (attempt %d): %s", what, attempt, exc)
    raise SystemExit(f"{what} failed 3 times")


def trace_app(engine: Engine, app: App, workdir: Path) -> SavedTrace:
    if app.fixture is not None:
        labels = {"io.slim.fixture": app.fixture}
        engine.build(context_of(REPO / "fixtures" / app.fixture), app.image, labels=labels)
    elif not engine.image_exists(app.image):
        raise SystemExit(f"{app.image} is missing: run scripts/fat-image.sh")
    probes = ProbeRequest(
        http=tuple(parse_http_probe(p) for p in app.http), default_get=not app.http
    )
    options = TraceOptions(until_exit=app.until_exit, probes=probes, echo_app=False)
    trace = attempts(
        f"{app.name}: trace", lambda: trace_image(engine, app.image, options, default_cache_dir())
    )
    path = workdir / f"{app.name}.trace.json"
    trace.save(path)
    return SavedTrace(trace, path)


def build_size(engine: Engine, app: App, trace: SavedTrace, workdir: Path, **rules) -> int:
    tag = f"slim-bench-coverage-{app.name}:micro"
    options = BuildOptions(
        tags=(tag,), report=workdir / "report.json", sbom=workdir / "sbom.json", **rules
    )
    try:
        built = attempts(
            f"{app.name}: build",
            lambda: build_micro(engine, app.image, [trace], options, default_cache_dir()),
        )
        return built.micro_size or 0
    finally:
        engine.remove_image(tag)


def today_size(checkout: Path, engine: Engine, app: App, trace: SavedTrace, workdir: Path) -> int:
    """What the code in `checkout` builds from the same trace."""
    tag = f"slim-bench-coverage-{app.name}:today"
    report = workdir / "today.report.json"
    command = [sys.executable, "-m", "slimmer", "-q", "build", app.image, "-t", tag]
    command += ["--trace", str(trace.path), "--report", str(report)]
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    try:
        attempts(
            f"{app.name}: today's build",
            lambda: subprocess.run(command, env=env, check=True, capture_output=True, cwd=workdir),
        )
        return int(json.loads(report.read_text())["sizes"]["micro"])
    finally:
        engine.remove_image(tag)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", default=",".join(APPS))
    parser.add_argument("--today", type=Path, default=None, metavar="DIR")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = []
    with (
        Engine.from_environment(os.environ) as engine,
        tempfile.TemporaryDirectory(prefix="slim-coverage-") as tmp,
    ):
        workdir = Path(tmp)
        for name in args.apps.split(","):
            app = APPS[name]
            trace = trace_app(engine, app, workdir)
            row = Row(name)
            if args.today is not None:
                row.sizes["today"] = today_size(args.today.resolve(), engine, app, trace, workdir)
            for config, rules in CONFIGS.items():
                row.sizes[config] = build_size(engine, app, trace, workdir, **rules)
            rows.append(row)
            print(f"{name}: {row.sizes}", file=sys.stderr)
    print_table(rows)


def print_table(rows: list[Row]) -> None:
    base = "today" if "today" in rows[0].sizes else "none"
    header = f"{'app':<11} {base:>7} {'all':>7} {'+%':>6}" + "".join(
        f" {rule:>9}" for rule in ("content", "siblings", "closure", "data")
    )
    print("\nmicro image sizes in MB; a rule's column: what it adds to `all` (kB)\n")
    print(header)
    print("-" * len(header))
    growth = []
    for row in rows:
        sizes = row.sizes
        extra = 100 * (sizes["all"] - sizes[base]) / sizes[base]
        growth.append(extra)
        added = "".join(
            f" {(sizes['all'] - sizes[rule]) / 1e3:9.0f}"
            for rule in ("content", "siblings", "closure", "data")
        )
        figures = f"{sizes[base] / 1e6:7.2f} {sizes['all'] / 1e6:7.2f} {extra:6.1f}"
        print(f"{row.app:<11} {figures}{added}")
    print(f"\nmedian growth over {base}: {statistics.median(growth):.1f}%")


if __name__ == "__main__":
    main()
