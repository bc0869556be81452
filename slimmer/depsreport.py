"""Rendering of an ELF closure: an lddtree-like tree and versioned JSON."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from slimmer.loader import Closure, Dependency, LinkMap, LoadedObject
from slimmer.rootfs import printable

DEPS_SCHEMA = "slim.deps/1"


@dataclass(frozen=True)
class LinkRecord:
    path: str
    target: str


@dataclass(frozen=True)
class MissingRecord:
    name: str
    requester: str
    problem: str


@dataclass(frozen=True)
class SkippedRecord:
    path: str
    reason: str


@dataclass(frozen=True)
class ObjectRecord:
    path: str  # canonical, in the root
    requested: str
    opened_as: str
    loaded_by: str | None
    via: str  # a loader.Via value
    variants: tuple[str, ...]


@dataclass(frozen=True)
class LinkMapRecord:
    input: str
    libc: str | None
    objects: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class DepsReport:
    """An ELF closure as plain data (slim deps --json). Paths are in-root,
    undecodable bytes shown as \\xNN escapes."""

    schema: Literal["slim.deps/1"] = DEPS_SCHEMA
    root: str
    inputs: tuple[str, ...]
    files: tuple[str, ...]
    symlinks: tuple[LinkRecord, ...]
    missing: tuple[MissingRecord, ...]
    skipped: tuple[SkippedRecord, ...]
    objects: tuple[ObjectRecord, ...]
    link_maps: tuple[LinkMapRecord, ...]


def closure_report(closure: Closure, root: str) -> DepsReport:
    """The closure as a DepsReport (schema slim.deps/1)."""
    return DepsReport(
        root=root,
        inputs=tuple(printable(m.root) for m in closure.link_maps)
        + tuple(printable(s.path) for s in closure.skipped),
        files=tuple(printable(path) for path in closure.files),
        symlinks=tuple(
            LinkRecord(printable(h.path), printable(h.target)) for h in closure.symlinks
        ),
        missing=tuple(
            MissingRecord(printable(d.name), printable(d.requester), d.problem)
            for d in closure.missing
        ),
        skipped=tuple(SkippedRecord(printable(s.path), s.reason) for s in closure.skipped),
        objects=tuple(_object_record(obj) for obj in closure.objects()),
        link_maps=tuple(
            LinkMapRecord(
                printable(m.root),
                m.libc.value if m.libc else None,
                tuple(printable(o.canonical) for o in m.objects),
            )
            for m in closure.link_maps
        ),
    )


def _object_record(obj: LoadedObject) -> ObjectRecord:
    return ObjectRecord(
        path=printable(obj.canonical),
        requested=printable(obj.requested),
        opened_as=printable(obj.opened_as),
        loaded_by=printable(obj.loaded_by) if obj.loaded_by else None,
        via=obj.via.value,
        variants=tuple(printable(v.path) for v in obj.variants),
    )


def closure_tree(closure: Closure) -> tuple[str, ...]:
    """The lddtree-like lines of every link map of a closure."""
    return tuple(line for link_map in closure.link_maps for line in render_tree(link_map))


def render_tree(link_map: LinkMap) -> list[str]:
    """Lines of an lddtree-like tree: each object's requests, indented under
    the object that first loaded it; a library seen before is not expanded."""
    by_canonical = {obj.canonical: obj for obj in link_map.objects}
    requests: dict[str, list[Dependency]] = {}
    for dep in link_map.dependencies:
        requests.setdefault(dep.requester, []).append(dep)
    main = link_map.objects[0]
    lines = [f"{printable(link_map.root)} ({printable(main.canonical)})"]
    expanded = {main.canonical}
    stack = [(dep, 1) for dep in reversed(requests.get(main.canonical, []))]
    while stack:  # pre-order, without recursion
        dep, depth = stack.pop()
        indent = "    " * depth
        if dep.target is None:
            lines.append(f"{indent}{printable(dep.name)} => not found ({dep.problem})")
            continue
        obj = by_canonical[dep.target]
        first_load = obj.loaded_by == dep.requester and obj.canonical not in expanded
        note = f" [{obj.via.value}]" if first_load else ""
        lines.append(f"{indent}{printable(dep.name)} => {printable(obj.canonical)}{note}")
        lines.extend(f"{indent}    variant: {printable(v.path)}" for v in obj.variants)
        if first_load:
            expanded.add(obj.canonical)
            stack.extend((child, depth + 1) for child in reversed(requests.get(obj.canonical, [])))
    return lines
