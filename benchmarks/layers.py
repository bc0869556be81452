"""Benchmark: what layering the micro images by update risk saves a registry,
and what it costs each image (issue 14).

For several apps of one Debian base (fixtures/ and the fat nginx), traces
each app and runs slim's own collect step (the collecting sensor: the file
set, the kept packages), then splits the collected rootfs with the package
records into layers under several policies (slimmer.layers.plan_image, as
`slim build` does) and prints:

- the sum of the single-layer images against the unique layer bytes a
  registry stores (distinct layer digests; gzip'd too, as a registry stores
  them), and what one node's layer store keeps (distinct layer chains);
- per image, the bytes layering adds (tar headers of the directories every
  layer repeats, end-of-archive blocks);
- with --engine-check, the micro images built by `slim build` (the default
  policy) and the engine's own layers they share (RootFS.Layers).

Targets (issue 14): a third fewer unique bytes or better, at no more than 2%
more bytes per image.

    python benchmarks/layers.py [--apps nginx,pyapp,...] [--engine-check]
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from slimmer.assemble import (
    Collected,
    build_micro,
    collect,
    package_records_of,
    selection_request,
)
from slimmer.builder import BuildOptions, SavedTrace
from slimmer.bundle import sensor_bundle
from slimmer.cli.base import default_cache_dir
from slimmer.engine import Engine
from slimmer.layers import Granularity, LayerPolicy, RootfsSource, plan_image, write_layer
from slimmer.protocol import CollectJob
from slimmer.trace import ImageConfig
from slimmer.tracer import TraceOptions, trace_image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # one way to build fixtures/ images, shared with the tests
from tests.helpers.images import context_of  # noqa: E402

log = logging.getLogger("layers")


@dataclass(frozen=True)
class App:
    name: str
    image: str
    fixture: str | None  # fixtures/<dir> it is built from (None: nginx-build)
    until_exit: bool


APPS = {
    app.name: app
    for app in (
        App("nginx", "nginx-build", None, False),
        App("pyapp", "slim-fixture-pyapp:latest", "pyapp", False),
        App("shelljob", "slim-fixture-shelljob:latest", "shelljob", True),
        App("cplugin", "slim-fixture-cplugin:latest", "cplugin", True),
        App("prodperl", "slim-fixture-prodperl:latest", "prodperl", True),
        App("prodcurl", "slim-fixture-prodcurl:latest", "prodcurl", True),
        App("prodpyjob", "slim-fixture-prodpyjob:latest", "prodpyjob", True),
    )
}
POLICIES = {
    "single": LayerPolicy(Granularity.SINGLE),
    "kind": LayerPolicy(Granularity.KIND),
    "package-256k": LayerPolicy(Granularity.PACKAGE, 256 * 1024),
    "package-64k": LayerPolicy(Granularity.PACKAGE, 64 * 1024),
    "file-512k": LayerPolicy(Granularity.FILE, 512 * 1024),
    "file-256k": LayerPolicy(Granularity.FILE, 256 * 1024),
    "file-128k (default)": LayerPolicy(),
    "file-64k": LayerPolicy(Granularity.FILE, 64 * 1024),
}
DEFAULT = "file-128k (default)"


def ensure_image(engine: Engine, app: App) -> App:
    """The app with its image's id: other sessions may rebuild the tag
    while the benchmark runs."""
    if app.fixture is None:
        if not engine.image_exists(app.image):
            raise SystemExit(f"{app.image} is missing: run scripts/fat-image.sh")
    else:
        log.info("building %s from fixtures/%s", app.image, app.fixture)
        engine.build(context_of(REPO / "fixtures" / app.fixture), app.image)
    return replace(app, image=str(engine.image_attrs(app.image)["Id"]))


def trace_app(engine: Engine, app: App, workdir: Path) -> SavedTrace:
    path = workdir / f"{app.name}.trace.json"
    options = TraceOptions(until_exit=app.until_exit, echo_app=False)
    for attempt in range(1, 4):
        # the engine is shared: another session's clean-up can remove our
        # container mid-run, so a failed step is tried again
        try:
            trace = trace_image(engine, app.image, options, default_cache_dir())
        except Exception as exc:
            log.warning("%s: trace failed (attempt %d): %s", app.name, attempt, exc)
            continue
        trace.save(path)
        return SavedTrace(trace, path)
    raise SystemExit(f"{app.name}: trace failed 3 times")


def collect_app(engine: Engine, app: App, trace: SavedTrace, workdir: Path) -> Collected:
    """slim build's collect step: the sensor in a container of the image."""
    attrs = engine.image_attrs(app.image)
    options = BuildOptions(context_only=workdir / "unused.tar")
    request = selection_request(
        [trace.trace], ImageConfig.from_inspect(attrs), options, attrs.get("Created")
    )
    bundle = sensor_bundle(default_cache_dir())
    job = CollectJob(selection=request)
    return collect(engine, app.image, bundle, job, workdir / f"{app.name}.rootfs.tar", {})


class _Gzip:
    """Streaming gzip size (level 6, no name, no time): what a registry stores."""

    def __init__(self) -> None:
        self.compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(self.compressor.compress(data))
        return len(data)

    def close(self) -> int:
        self.size += len(self.compressor.flush())
        return self.size


@dataclass(frozen=True)
class LayerFigure:
    name: str
    digest: str
    size: int
    gzip_size: int


def measure(collected: Collected, policy: LayerPolicy) -> list[LayerFigure]:
    records = package_records_of(collected, BuildOptions(tags=("x",)))
    figures = []
    generated = {r.path: r.data for r in records}
    with collected.rootfs.open("rb") as handle, RootfsSource(handle, generated) as source:
        entries = collected.result.selection.entries
        plan = plan_image(entries, collected.result.packages, records, source.hard_links(), policy)
        for layer in plan.layers:
            gzip = _Gzip()
            written = write_layer(layer, plan, source, gzip)  # type: ignore[arg-type]
            figures.append(LayerFigure(layer.name, written.tar_digest, written.size, gzip.close()))
    return figures


def chain_ids(figures: list[LayerFigure]) -> Iterator[str]:
    chain = ""
    for figure in figures:
        chain = (
            figure.digest
            if not chain
            else "sha256:" + hashlib.sha256(f"{chain} {figure.digest}".encode()).hexdigest()
        )
        yield chain


def report(results: dict[str, dict[str, list[LayerFigure]]], apps: list[str]) -> None:
    single = {app: sum(f.size for f in results["single"][app]) for app in apps}
    single_gz = {app: sum(f.gzip_size for f in results["single"][app]) for app in apps}
    total, total_gz = sum(single.values()), sum(single_gz.values())
    print(f"\n{len(apps)} micro images: {', '.join(apps)}")
    print(f"sum of single-layer images: {total / 1e6:.2f} MB ({total_gz / 1e6:.2f} MB gzip)\n")
    header = (
        f"{'policy':<20} {'layers/img':>10} {'unique MB':>10} {'saved':>7} "
        f"{'unique gz':>10} {'saved gz':>9} {'node gz':>8} {'max +/img':>10} {'max +gz':>8}"
    )
    print(header)
    print("-" * len(header))
    for policy, per_app in results.items():
        unique: dict[str, int] = {}
        unique_gz: dict[str, int] = {}
        chains_gz: dict[str, int] = {}
        for app in apps:
            for figure, chain in zip(per_app[app], chain_ids(per_app[app]), strict=True):
                unique[figure.digest] = figure.size
                unique_gz[figure.digest] = figure.gzip_size
                chains_gz[chain] = figure.gzip_size
        growth = max(sum(f.size for f in per_app[a]) / single[a] - 1 for a in apps)
        growth_gz = max(sum(f.gzip_size for f in per_app[a]) / single_gz[a] - 1 for a in apps)
        layers = sum(len(per_app[a]) for a in apps) / len(apps)
        u, ugz, node = sum(unique.values()), sum(unique_gz.values()), sum(chains_gz.values())
        print(
            f"{policy:<20} {layers:10.1f} {u / 1e6:10.2f} {1 - u / total:7.1%} "
            f"{ugz / 1e6:10.2f} {1 - ugz / total_gz:9.1%} {1 - node / total_gz:8.1%} "
            f"{growth:10.2%} {growth_gz:8.2%}"
        )
    print(
        "\nsaved: 1 - unique/sum, over distinct layer digests (what a registry stores);"
        " node gz: distinct layer chains (what one node's layer store keeps); +/img: the"
        " largest growth of one image over its single layer"
    )


def show_layers(app: str, figures: list[LayerFigure]) -> None:
    print(f"\nlayers of {app} ({DEFAULT}):")
    for figure in figures:
        print(f"  {figure.digest[7:19]}  {figure.size / 1e3:9.1f} kB  {figure.name}")


def engine_check(engine: Engine, apps: list[App], traces: dict[str, SavedTrace]) -> None:
    """Build the micro images with `slim build` (default layers): which of
    the engine's own layers do they share?"""
    seen: dict[str, set[str]] = {}
    tags = []
    cache = default_cache_dir()
    try:
        with tempfile.TemporaryDirectory(prefix="slim-layers-check-") as scratch:
            for app in apps:
                tag = f"slim-bench-layers-{app.name}:micro"
                options = BuildOptions(
                    tags=(tag,),
                    report=Path(scratch) / f"{app.name}.json",
                    sbom=Path(scratch) / f"{app.name}.sbom.json",
                )
                result = build_micro(engine, app.image, [traces[app.name]], options, cache)
                tags.append(tag)
                layers = engine.image_attrs(tag)["RootFS"]["Layers"]
                names = {layer.diff_id: layer.name for layer in result.report.layers}
                for diff_id in layers:
                    seen.setdefault(diff_id, set()).add(f"{app.name}")
                    seen[diff_id].add(f"={names.get(diff_id, '?')}")
        shared = {d: s for d, s in seen.items() if len([n for n in s if n[0] != "="]) > 1}
        print(f"\nengine check: {len(seen)} distinct engine layers, {len(shared)} shared:")
        for diff_id, users in sorted(shared.items(), key=lambda kv: -len(kv[1])):
            apps_using = sorted(n for n in users if n[0] != "=")
            name = next(n[1:] for n in users if n[0] == "=")
            print(f"  {diff_id[7:19]}  {', '.join(apps_using):<45} {name}")
    finally:
        for tag in tags:
            engine.remove_image(tag)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--apps", default="nginx,pyapp,shelljob,cplugin,prodperl,prodcurl,prodpyjob"
    )
    parser.add_argument("--engine-check", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="layers: %(message)s")

    apps = [APPS[name] for name in args.apps.split(",")]
    with (
        Engine.from_environment(os.environ) as engine,
        tempfile.TemporaryDirectory(prefix="slim-layers-") as tmp,
    ):
        workdir = Path(tmp)
        collected: dict[str, Collected] = {}
        traces: dict[str, SavedTrace] = {}
        apps = [ensure_image(engine, app) for app in apps]
        for app in apps:
            started = time.monotonic()
            traces[app.name] = trace_app(engine, app, workdir)
            collected[app.name] = collect_app(engine, app, traces[app.name], workdir)
            log.info("%s: traced and collected in %.1f s", app.name, time.monotonic() - started)
        results = {
            name: {app.name: measure(collected[app.name], policy) for app in apps}
            for name, policy in POLICIES.items()
        }
        report(results, [app.name for app in apps])
        for app in apps:
            show_layers(app.name, results[DEFAULT][app.name])
        if args.engine_check:
            engine_check(engine, apps, traces)


if __name__ == "__main__":
    main()
