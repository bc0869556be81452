"""Benchmark: what layering the micro images by update risk saves a registry,
and what it costs each image (issue 14).

Builds the micro images' contexts of several apps from one Debian base
(`slim build IMAGE --context-only`), computes the package ownership of
every kept path in a container of each fat image (the bundled CPython runs
slimmer.packages there, as the collecting sensor will), splits each rootfs
into layers under several policies (slimmer.layers) with the trimmed
package records added, and prints:

- the sum of the single-layer images against the unique layer bytes a
  registry stores (distinct diff_ids; gzip'd too, as a registry stores them);
- per image, the bytes layering adds (tar headers of the directories every
  layer repeats, end-of-archive blocks);
- with --engine-check, the chosen policy's layers ADDed into real images on
  the engine, to see that the engine's own layer diffs are shared too.

Targets (issue 14): a third fewer unique bytes or better, at no more than 2%
more bytes per image.

    python benchmarks/layers.py [--apps nginx,pyapp,...] [--workdir DIR] [--reuse]
                                [--engine-check]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimmer.sensor.protocol import SENSOR_LIBDIR, SENSOR_LOADER, SENSOR_PYTHON

from slimmer.bundle import sensor_bundle
from slimmer.engine import Engine, new_run_id
from slimmer.fileset import Entry
from slimmer.layers import (
    DIRECTORY_MTIME,
    Granularity,
    LayerPlan,
    LayerPolicy,
    RootfsSource,
    plan_layers,
    with_generated,
    write_layer,
)
from slimmer.packages import KeptPackages, Package, package_records

log = logging.getLogger("layers")

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class App:
    name: str
    image: str
    fixture: str | None  # fixtures/<dir> it is built from (None: nginx-build)
    build_options: tuple[str, ...]


APPS = {
    app.name: app
    for app in (
        App("nginx", "nginx-build", None, ()),
        App("pyapp", "slim-fixture-pyapp:latest", "pyapp", ()),
        App("shelljob", "slim-fixture-shelljob:latest", "shelljob", ("--until-exit",)),
        App("cplugin", "slim-fixture-cplugin:latest", "cplugin", ("--until-exit",)),
        App("prodperl", "slim-fixture-prodperl:latest", "prodperl", ("--until-exit",)),
        App("prodcurl", "slim-fixture-prodcurl:latest", "prodcurl", ("--until-exit",)),
        App("prodpyjob", "slim-fixture-prodpyjob:latest", "prodpyjob", ("--until-exit",)),
    )
}
POLICIES = {
    "single": LayerPolicy(Granularity.SINGLE),
    "kind": LayerPolicy(Granularity.KIND),
    "package-256k": LayerPolicy(Granularity.PACKAGE, 256 * 1024),
    "package-64k": LayerPolicy(Granularity.PACKAGE, 64 * 1024),
    "file-512k": LayerPolicy(Granularity.FILE, 512 * 1024),
    "file-256k": LayerPolicy(Granularity.FILE, 256 * 1024),
    "file-128k": LayerPolicy(Granularity.FILE, 128 * 1024),
}

# Runs in a container of the fat image under the sensor's bundled CPython,
# with slimmer's sources beside it: what the collecting sensor will compute.
PROBE = """\
import json, stat, sys
sys.path.insert(0, "/.slim/probe")
from slimmer.packages import read_package_db
from slimmer.rootfs import RootFS
with open("/.slim/probe/kept.json", encoding="utf-8") as handle:
    kept_paths = json.load(handle)
fs = RootFS("/")
db = read_package_db(fs)
kept = db.kept(fs, kept_paths)
base_bytes = 0
for package in db.packages:
    if package.name not in db.base_names():
        continue
    for record in db.files(package):
        try:
            info = fs.lstat(record.path)
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode):
            base_bytes += info.st_size
with open("/.slim/run/result.json", "w", encoding="utf-8") as handle:
    json.dump({"kept": kept.to_json(), "packages": len(db),
               "base_full_bytes": base_bytes, "base": sorted(db.base_names())}, handle)
"""


def context_tar(directory: Path) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(directory.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(directory)), recursive=False)
    buffer.seek(0)
    return buffer


def ensure_image(engine: Engine, app: App) -> None:
    if app.fixture is None:
        if not engine.image_exists(app.image):
            subprocess.run(["bash", str(REPO / "scripts/fat-image.sh")], check=True)
        return
    log.info("building %s from fixtures/%s", app.image, app.fixture)
    engine.build(context_tar(REPO / "fixtures" / app.fixture), app.image)


def slim_context(app: App, workdir: Path, attempts: int = 3) -> Path:
    """The micro image's rootfs.tar, by `slim build --context-only`."""
    context = workdir / f"{app.name}.ctx.tar"
    slim = Path(sys.executable).with_name("slim")
    command = [str(slim), "build", app.image, *app.build_options, "--quiet-app"]
    command += ["--context-only", str(context), "--report", str(workdir / f"{app.name}.json")]
    command += ["--trace", str(workdir / f"{app.name}.trace.json")]
    trace = [str(slim), "trace", app.image, *app.build_options, "--quiet-app"]
    trace += ["-o", str(workdir / f"{app.name}.trace.json")]
    for attempt in range(1, attempts + 1):
        # the engine is shared: another session's clean-up can remove our
        # container mid-run, so a failed step is tried again
        done = subprocess.run(trace, capture_output=True, text=True)
        if done.returncode == 0:
            done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode == 0:
            break
        log.warning("%s: slim failed (attempt %d): %s", app.name, attempt, done.stderr[-300:])
    else:
        raise SystemExit(f"{app.name}: slim build failed {attempts} times")
    rootfs = workdir / f"{app.name}.rootfs.tar"
    with tarfile.open(context) as outer, rootfs.open("wb") as out:
        member = outer.extractfile("rootfs.tar")
        assert member is not None
        while chunk := member.read(1 << 20):
            out.write(chunk)
    return rootfs


def probe_packages(engine: Engine, image: str, kept_paths: list[str]) -> dict[str, Any]:
    for attempt in range(1, 4):
        try:
            return _probe_packages(engine, image, kept_paths)
        except Exception as exc:  # a shared engine: another session's clean-up races ours
            log.warning("%s: package probe failed (attempt %d): %s", image, attempt, exc)
    raise SystemExit(f"{image}: package probe failed 3 times")


def _probe_packages(engine: Engine, image: str, kept_paths: list[str]) -> dict[str, Any]:
    sources = io.BytesIO()
    with tarfile.open(fileobj=sources, mode="w") as tar:
        for path in sorted((REPO / "slimmer").glob("*.py")):
            tar.add(path, arcname=f".slim/probe/slimmer/{path.name}")
        for name, data in (
            (".slim/probe/probe.py", PROBE.encode()),
            (".slim/probe/kept.json", json.dumps(kept_paths).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        run_dir = tarfile.TarInfo(".slim/run")
        run_dir.type, run_dir.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(run_dir)
    bundle = sensor_bundle(Path(tempfile.gettempdir()) / "slim-bench-cache")
    command = [SENSOR_LOADER, "--library-path", SENSOR_LIBDIR, SENSOR_PYTHON]
    command += ["-I", "-S", "-B", "/.slim/probe/probe.py"]
    options = {"entrypoint": command, "command": [], "user": "0", "detach": True}
    with engine.container(image, new_run_id(), **options) as container:
        with bundle.open("rb") as handle:
            engine.put_archive(container, handle)
        engine.put_archive(container, sources.getvalue())
        container.start()
        status = engine.wait(container, 300)
        if status != 0:
            raise SystemExit(f"{image}: package probe failed ({container.logs()[-2000:]!r})")
        data = engine.get_file(container, "/.slim/run/result.json", 1 << 28)
        assert data is not None
        return json.loads(data)


@dataclass(frozen=True)
class ImageInput:
    app: str
    rootfs: Path
    entries: list[Entry]
    hard_links: dict[str, str]
    owners: dict[str, Package]
    base: tuple[str, ...]
    ranks: dict[str, int]
    generated: dict[str, bytes]
    base_full_bytes: int


def image_input(app: str, rootfs: Path, probed: dict[str, Any]) -> ImageInput:
    from slimmer.layers import entries_from_rootfs_tar

    kept = KeptPackages.from_json(probed["kept"])
    with rootfs.open("rb") as handle:
        entries, links = entries_from_rootfs_tar(handle)
    owners = kept.owner_map()
    records = package_records(kept)
    generated = []
    for record in records:
        package = next((k.package for k in kept.packages if k.package.key == record.package), None)
        # a record is as old as the newest kept file of its package: no clock enters
        mtime = max(
            (e.mtime for e in entries if package is not None and owners.get(e.path) == package),
            default=DIRECTORY_MTIME,
        )
        if package is not None:
            owners[record.path] = package
        generated.append((record.path, record.data, record.mode, mtime))
    merged = with_generated(entries, generated)
    return ImageInput(
        app,
        rootfs,
        merged,
        links,
        owners,
        kept.base,
        kept.dependency_ranks(),
        {r.path: r.data for r in records},
        int(probed["base_full_bytes"]),
    )


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
    diff_id: str
    size: int
    gzip_size: int


def measure(image: ImageInput, policy: LayerPolicy) -> tuple[LayerPlan, list[LayerFigure]]:
    plan = plan_layers(
        image.entries, image.owners, image.base, policy, image.hard_links, image.ranks
    )
    figures = []
    with image.rootfs.open("rb") as handle, RootfsSource(handle, image.generated) as source:
        for layer in plan.layers:
            gzip = _Gzip()
            written = write_layer(layer, plan, source, gzip)  # type: ignore[arg-type]
            figures.append(LayerFigure(layer.name, written.diff_id, written.size, gzip.close()))
    return plan, figures


def chain_ids(figures: list[LayerFigure]) -> Iterator[str]:
    chain = ""
    for figure in figures:
        chain = (
            figure.diff_id
            if not chain
            else "sha256:" + hashlib.sha256(f"{chain} {figure.diff_id}".encode()).hexdigest()
        )
        yield chain


def report(results: dict[str, dict[str, list[LayerFigure]]], inputs: list[ImageInput]) -> None:
    apps = [i.app for i in inputs]
    single = {app: sum(f.size for f in results["single"][app]) for app in apps}
    single_gz = {app: sum(f.gzip_size for f in results["single"][app]) for app in apps}
    total, total_gz = sum(single.values()), sum(single_gz.values())
    print(f"\n{len(apps)} micro images: {', '.join(apps)}")
    print(f"sum of single-layer images: {total / 1e6:.2f} MB ({total_gz / 1e6:.2f} MB gzip)\n")
    header = (
        f"{'policy':<14} {'layers/img':>10} {'unique MB':>10} {'saved':>7} "
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
                unique[figure.diff_id] = figure.size
                unique_gz[figure.diff_id] = figure.gzip_size
                chains_gz[chain] = figure.gzip_size
        growth = max(sum(f.size for f in per_app[a]) / single[a] - 1 for a in apps)
        growth_gz = max(sum(f.gzip_size for f in per_app[a]) / single_gz[a] - 1 for a in apps)
        layers = sum(len(per_app[a]) for a in apps) / len(apps)
        u, ugz, node = sum(unique.values()), sum(unique_gz.values()), sum(chains_gz.values())
        print(
            f"{policy:<14} {layers:10.1f} {u / 1e6:10.2f} {1 - u / total:7.1%} "
            f"{ugz / 1e6:10.2f} {1 - ugz / total_gz:9.1%} {1 - node / total_gz:8.1%} "
            f"{growth:10.2%} {growth_gz:8.2%}"
        )
    bound, bound_total = file_level_bound(inputs)
    print(
        f"\nbound: deduplicating every identical file (path, bytes, owner, mode, mtime) across"
        f" the images stores {bound / 1e6:.2f} MB of their {bound_total / 1e6:.2f} MB of"
        f" file bytes ({1 - bound / bound_total:.1%} saved): no layering can do better"
    )
    base_full = max(i.base_full_bytes for i in inputs)
    print(
        f"\n(full-base alternative: a base layer holding every file of the distribution's base"
        f" packages would be {base_full / 1e6:.1f} MB in every image: the images of these apps"
        f" are {min(single.values()) / 1e6:.1f}-{max(single.values()) / 1e6:.1f} MB)"
    )
    print(
        "saved: 1 - unique/sum, over distinct diff_ids (registry); node gz: distinct layer"
        " chains, what Docker's layer store on one node keeps; +/img: the largest growth of"
        " one image over its single layer"
    )


def file_level_bound(inputs: list[ImageInput]) -> tuple[int, int]:
    unique: dict[tuple[object, ...], int] = {}
    total = 0
    for image in inputs:
        with image.rootfs.open("rb") as handle, tarfile.open(fileobj=handle) as tar:
            for member in tar:
                if not member.isreg():
                    continue
                reader = tar.extractfile(member)
                assert reader is not None
                digest = hashlib.sha256(reader.read()).hexdigest()
                key = (member.name, digest, member.mode, member.uid, member.gid, member.mtime)
                unique[key] = member.size
                total += member.size
    return sum(unique.values()), total


def show_layers(app: str, figures: list[LayerFigure], policy: str) -> None:
    print(f"\nlayers of {app} ({policy}):")
    for figure in figures:
        print(f"  {figure.diff_id[7:19]}  {figure.size / 1e3:9.1f} kB  {figure.name}")


def engine_check(engine: Engine, inputs: list[ImageInput], policy: LayerPolicy) -> None:
    """ADD each layer tar into a real image: are the engine's diffs shared?"""
    seen: dict[str, set[str]] = {}
    tags = []
    try:
        for image in inputs:
            plan = plan_layers(
                image.entries, image.owners, image.base, policy, image.hard_links, image.ranks
            )
            context = io.BytesIO()
            with (
                tarfile.open(fileobj=context, mode="w", format=tarfile.USTAR_FORMAT) as tar,
                image.rootfs.open("rb") as handle,
                RootfsSource(handle, image.generated) as source,
            ):
                lines = ["FROM scratch"]
                blobs = []
                for index, layer in enumerate(plan.layers):
                    buffer = io.BytesIO()
                    write_layer(layer, plan, source, buffer)
                    blobs.append((f"layer{index:03d}.tar", buffer.getvalue()))
                    lines.append(f"ADD layer{index:03d}.tar /")
                for name, data in [("Dockerfile", ("\n".join(lines) + "\n").encode()), *blobs]:
                    info = tarfile.TarInfo(name)
                    info.size, info.mtime = len(data), 0
                    tar.addfile(info, io.BytesIO(data))
            context.seek(0)
            tag = f"slim-bench-layers-{image.app}:latest"
            engine.build(context, tag)
            tags.append(tag)
            for diff_id in engine.image_attrs(tag)["RootFS"]["Layers"]:
                seen.setdefault(diff_id, set()).add(image.app)
        shared = {d: apps for d, apps in seen.items() if len(apps) > 1}
        print(f"\nengine check: {len(seen)} distinct engine layers, {len(shared)} shared:")
        for diff_id, apps in sorted(shared.items(), key=lambda kv: -len(kv[1])):
            print(f"  {diff_id[7:19]}  {', '.join(sorted(apps))}")
    finally:
        for tag in tags:
            engine.remove_image(tag)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", default="nginx,pyapp,shelljob,cplugin,prodperl,prodcurl")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--reuse", action="store_true", help="reuse contexts in --workdir")
    parser.add_argument("--show", default="file-128k", help="policy whose layers are listed")
    parser.add_argument("--engine-check", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="layers: %(message)s")

    engine = Engine.from_environment(os.environ)
    apps = [APPS[name] for name in args.apps.split(",")]
    with tempfile.TemporaryDirectory(prefix="slim-layers-") as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        inputs = []
        for app in apps:
            rootfs = workdir / f"{app.name}.rootfs.tar"
            probe_file = workdir / f"{app.name}.packages.json"
            if not (args.reuse and rootfs.exists() and probe_file.exists()):
                ensure_image(engine, app)
                started = time.monotonic()
                rootfs = slim_context(app, workdir)
                with rootfs.open("rb") as handle, tarfile.open(fileobj=handle) as tar:
                    kept_paths = ["/" + m.name for m in tar.getmembers()]
                probed = probe_packages(engine, app.image, kept_paths)
                probe_file.write_text(json.dumps(probed))
                log.info("%s: context and packages in %.1f s", app.name, time.monotonic() - started)
            inputs.append(image_input(app.name, rootfs, json.loads(probe_file.read_text())))
        results: dict[str, dict[str, list[LayerFigure]]] = {}
        for name, policy in POLICIES.items():
            results[name] = {i.app: measure(i, policy)[1] for i in inputs}
        report(results, inputs)
        for image in inputs:
            show_layers(image.app, results[args.show][image.app], args.show)
        if args.engine_check:
            engine_check(engine, inputs, POLICIES[args.show])


if __name__ == "__main__":
    main()
