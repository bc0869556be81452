"""`slim deps`: the ELF closure of paths, in a root directory on this host
or inside an image (computed by the sensor in a container of it, with the
image's ENV and WORKDIR)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from slimmer.bundle import sensor_bundle
from slimmer.depsreport import DepsReport, closure_report, closure_tree
from slimmer.errors import NotFound
from slimmer.loader import Loader
from slimmer.protocol import DepsJob, DepsResult
from slimmer.rootfs import RootFS
from slimmer.runner import run_sensor_once

if TYPE_CHECKING:
    from slimmer.engine import Engine


@dataclass(frozen=True, kw_only=True)
class DepsSettings:
    """How to emulate the loader. `env` is the image's (LD_LIBRARY_PATH,
    LD_PRELOAD), never the host's; inside an image it adds to the image's
    ENV. `cwd` None: / for a root, the image's WORKDIR for an image."""

    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    runtime_extras: bool = False
    gconv: bool = False
    use_ld_cache: bool = True
    as_if_ldconfig: bool = False


@dataclass(frozen=True)
class DepsOutcome:
    report: DepsReport
    tree: tuple[str, ...]


def closure_in_root(root: str, paths: tuple[str, ...], settings: DepsSettings) -> DepsOutcome:
    fs = RootFS(root)
    cwd = settings.cwd or "/"
    for path in paths:
        if not fs.exists(path, cwd=cwd):
            raise NotFound(
                f"{path}: not found inside {root}", "paths are inside the root, e.g. /usr/bin/env"
            )
    loader = Loader(
        fs,
        env=settings.env,
        cwd=cwd,
        use_ld_cache=settings.use_ld_cache,
        as_if_ldconfig=settings.as_if_ldconfig,
    )
    closure = loader.closure(
        list(paths), runtime_extras=settings.runtime_extras, gconv=settings.gconv
    )
    return DepsOutcome(closure_report(closure, root), closure_tree(closure))


def closure_in_image(
    engine: Engine, image: str, paths: tuple[str, ...], settings: DepsSettings, cache_dir: Path
) -> DepsOutcome:
    config = engine.image_config(image)
    job = DepsJob(
        paths=paths,
        env={**config.env_dict(), **settings.env},
        workdir=settings.cwd or config.workdir or "/",
        runtime_extras=settings.runtime_extras,
        gconv=settings.gconv,
        use_ld_cache=settings.use_ld_cache,
        as_if_ldconfig=settings.as_if_ldconfig,
    )
    result = run_sensor_once(engine, image, sensor_bundle(cache_dir), job, DepsResult)
    if result.not_found:
        raise NotFound(
            f"not found in {image}: {', '.join(result.not_found)}",
            "paths are the image's own, e.g. /usr/bin/env",
        )
    return DepsOutcome(result.report, result.tree)
