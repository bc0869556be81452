"""Images for tests and benchmarks: the build context of a fixtures/
directory, and images whose config a test chooses (an image saved from the
engine, its config edited, loaded back under a new tag in docker save/load
format), so tests can make configs no Dockerfile can express."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slimmer.engine import Engine


def context_of(directory: Path) -> io.BytesIO:
    """A build context tar of a fixtures/ directory."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(directory.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(directory)), recursive=False)
    buffer.seek(0)
    return buffer


def derive_image(
    engine: Engine, source: str, tag: str, edit: Callable[[dict[str, Any]], None]
) -> str:
    """Load a copy of `source` as `tag`, its config JSON changed by `edit`
    (in place). Returns the tag; the caller removes it."""
    saved = b"".join(engine.client.api.get_image(source))
    members: dict[str, tuple[tarfile.TarInfo, bytes | None]] = {}
    with tarfile.open(fileobj=io.BytesIO(saved)) as tar:
        for member in tar.getmembers():
            handle = tar.extractfile(member) if member.isreg() else None
            members[member.name] = (member, handle.read() if handle else None)
    manifest = json.loads(members["manifest.json"][1] or b"[]")
    config = json.loads(members[manifest[0]["Config"]][1] or b"{}")
    edit(config)
    config_bytes = json.dumps(config).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest[0]["Config"] = config_name
    manifest[0]["RepoTags"] = [tag]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, (member, data) in members.items():
            if name in ("manifest.json", "repositories") or (
                name.endswith(".json") and ("/" not in name)
            ):
                continue
            tar.addfile(member, io.BytesIO(data) if data is not None else None)
        for name, data in (
            (config_name, config_bytes),
            ("manifest.json", json.dumps(manifest).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    engine.client.api.load_image(out.getvalue())
    return tag


def image_tree(engine: Engine, image: str, path: str, run_id: str) -> dict[str, bytes | None]:
    """The files of an image under `path` as the engine archives them
    (name -> bytes, None for what is not a regular file)."""
    with engine.container(image, run_id, command=["none"], entrypoint=["none"]) as container:
        data = engine.archive(container, path)
    tree: dict[str, bytes | None] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            handle = tar.extractfile(member) if member.isreg() else None
            tree[member.name] = handle.read() if handle else None
    return tree
