"""`slim compare`: sizes, layers and files of images side by side, with
gates for CI."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from slimmer import wire
from slimmer.bundle import sensor_bundle
from slimmer.errors import UsageError
from slimmer.protocol import InventoryJob, InventoryResult
from slimmer.report import human_size
from slimmer.runner import run_sensor_once

if TYPE_CHECKING:
    from slimmer.engine import Engine

COMPARE_SCHEMA = "slim.compare/1"

_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3,
}  # fmt: skip


class SizeError(UsageError):
    """A --max-size that cannot be read."""


def parse_size(text: str) -> int:
    """'20MB' (decimal), '13.5MiB' (binary), '500k', '123' (bytes)."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _UNITS:
        raise SizeError(f"cannot read size {text!r}", "write it like 20MB, 13.5MiB or 500000")
    return int(float(match.group(1)) * _UNITS[unit])


@dataclass(frozen=True)
class ImageFigures:
    image: str
    size: int
    layers: int
    files: int | None
    ratio: float  # size of the first image / this one
    # OS packages its package database lists (dpkg, apk); None: no database,
    # or not counted (--no-files)
    packages: int | None = None
    id: str = ""  # the image id (sha256:...)
    digests: tuple[str, ...] = ()  # repo@sha256:..., where it was pushed or pulled


@dataclass(frozen=True, kw_only=True)
class CompareOutput:
    """`slim compare --format json`: figures per image and the failed gates."""

    schema: Literal["slim.compare/1"] = COMPARE_SCHEMA
    images: tuple[ImageFigures, ...]
    gates_failed: tuple[str, ...]


def figures(
    engine: Engine, images: list[str], cache_dir: Path, count_files: bool
) -> list[ImageFigures]:
    rows = []
    first_size = None
    for image in images:
        attrs = engine.image_attrs(image)
        size = int(attrs.get("Size", 0))
        first_size = first_size or size
        inventory = count_image_files(engine, image, cache_dir) if count_files else None
        layers = len((attrs.get("RootFS") or {}).get("Layers") or [])
        rows.append(
            ImageFigures(
                image,
                size,
                layers,
                inventory.files if inventory else None,
                round(first_size / size, 1) if size else 0,
                inventory.packages if inventory else None,
                id=str(attrs.get("Id") or ""),
                digests=tuple(str(d) for d in attrs.get("RepoDigests") or ()),
            )
        )
    return rows


def count_image_files(engine: Engine, image: str, cache_dir: Path) -> InventoryResult:
    """Regular files and OS packages in the image, counted inside a
    container of it."""
    bundle = sensor_bundle(cache_dir)
    job = InventoryJob(count_packages=True)
    return run_sensor_once(engine, image, bundle, job, InventoryResult)


def check_gates(
    rows: list[ImageFigures], max_size: int | None, min_ratio: float | None
) -> list[str]:
    """Gates apply to every image after the first (the reference); with one
    image, to that image."""
    failures = []
    gated = rows[1:] or rows
    for row in gated:
        if max_size is not None and row.size > max_size:
            failures.append(
                f"{row.image} is {human_size(row.size)}, over --max-size {human_size(max_size)}"
            )
        if min_ratio is not None and len(rows) > 1 and row.ratio < min_ratio:
            ref = rows[0].image
            failures.append(
                f"{row.image} is only {row.ratio}x smaller than {ref} (--min-ratio {min_ratio})"
            )
    return failures


def render(rows: list[ImageFigures], output: str, failures: list[str]) -> str:
    if output == "json":
        return wire.dumps(CompareOutput(images=tuple(rows), gates_failed=tuple(failures))).rstrip()
    header = ("image", "size", "bytes", "layers", "files", "packages", "ratio")
    table = [
        (
            r.image,
            human_size(r.size),
            str(r.size),
            str(r.layers),
            "-" if r.files is None else str(r.files),
            "-" if r.packages is None else str(r.packages),
            f"{r.ratio}x",
        )
        for r in rows
    ]
    if output == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in table]
        verdict = "**gates failed:** " + "; ".join(failures) if failures else "gates passed"
        return "\n".join([*lines, "", verdict])
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in table]
    return "\n".join(lines)
