"""Rendering of an ELF closure: an lddtree-like tree and versioned JSON."""

from __future__ import annotations

import os
from typing import Any

from slimmer.loader import Closure, Dependency, LinkMap, LoadedObject

DEPS_SCHEMA = "slim.deps/1"


def _text(path: str) -> str:
    """A path as printable text: undecodable bytes shown as \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def closure_to_json(closure: Closure, root: str) -> dict[str, Any]:
    """The closure as plain data (schema slim.deps/1). Paths are in-root."""
    return {
        "schema": DEPS_SCHEMA,
        "root": root,
        "inputs": [_text(m.root) for m in closure.link_maps]
        + [_text(s.path) for s in closure.skipped],
        "files": [_text(path) for path in closure.files],
        "symlinks": [{"path": _text(h.path), "target": _text(h.target)} for h in closure.symlinks],
        "missing": [
            {"name": _text(d.name), "requester": _text(d.requester), "problem": d.problem}
            for d in closure.missing
        ],
        "skipped": [{"path": _text(s.path), "reason": s.reason} for s in closure.skipped],
        "objects": [_object_json(obj) for obj in closure.objects()],
        "link_maps": [
            {
                "input": _text(m.root),
                "libc": m.libc.value if m.libc else None,
                "objects": [_text(o.canonical) for o in m.objects],
            }
            for m in closure.link_maps
        ],
    }


def _object_json(obj: LoadedObject) -> dict[str, Any]:
    return {
        "path": _text(obj.canonical),
        "requested": _text(obj.requested),
        "opened_as": _text(obj.opened_as),
        "loaded_by": _text(obj.loaded_by) if obj.loaded_by else None,
        "via": obj.via.value,
        "variants": [_text(v.path) for v in obj.variants],
    }


def render_tree(link_map: LinkMap) -> list[str]:
    """Lines of an lddtree-like tree: each object's requests, indented under
    the object that first loaded it; a library seen before is not expanded."""
    by_canonical = {obj.canonical: obj for obj in link_map.objects}
    requests: dict[str, list[Dependency]] = {}
    for dep in link_map.dependencies:
        requests.setdefault(dep.requester, []).append(dep)
    main = link_map.objects[0]
    lines = [f"{_text(link_map.root)} ({_text(main.canonical)})"]
    expanded = {main.canonical}
    stack = [(dep, 1) for dep in reversed(requests.get(main.canonical, []))]
    while stack:  # pre-order, without recursion
        dep, depth = stack.pop()
        indent = "    " * depth
        if dep.target is None:
            lines.append(f"{indent}{_text(dep.name)} => not found ({dep.problem})")
            continue
        obj = by_canonical[dep.target]
        first_load = obj.loaded_by == dep.requester and obj.canonical not in expanded
        note = f" [{obj.via.value}]" if first_load else ""
        lines.append(f"{indent}{_text(dep.name)} => {_text(obj.canonical)}{note}")
        lines.extend(f"{indent}    variant: {_text(v.path)}" for v in obj.variants)
        if first_load:
            expanded.add(obj.canonical)
            stack.extend((child, depth + 1) for child in reversed(requests.get(obj.canonical, [])))
    return lines
