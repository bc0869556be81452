"""Images with ANY config: the Dockerfile syntax cannot write a newline in
WORKDIR, so hostile fixture images are made the way a hostile tool would
make them, as an image tar (docker save format: manifest.json, the config
JSON, one layer tar per layer) fed to the engine's `docker load`.

Every image made here carries the label io.slim.run=<a run id of this test
session>, so the session's leftover check finds it if a test forgets to
remove it; `ImageMaker` removes what it made.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from slimmer.engine import RUN_LABEL, Engine

EPOCH = "2024-01-01T00:00:00Z"


@dataclass(frozen=True)
class LayerFile:
    """One member of a layer: a regular file, or a directory with data None."""

    data: bytes | None
    mode: int = 0o644


def layer_tar(files: Mapping[str, LayerFile]) -> bytes:
    """A layer tar of the given paths (parents are not added implicitly)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, item in sorted(files.items()):
            member = tarfile.TarInfo(path.lstrip("/"))
            member.mode, member.mtime = item.mode, 1_700_000_000
            if item.data is None:
                member.type = tarfile.DIRTYPE
                tar.addfile(member)
            else:
                member.size = len(item.data)
                tar.addfile(member, io.BytesIO(item.data))
    return out.getvalue()


def image_layers(engine: Engine, image: str) -> list[bytes]:
    """The layer tars of a local image, from `docker save` (for small bases
    like busybox)."""
    saved = io.BytesIO()
    for chunk in engine.client.api.get_image(image):
        saved.write(chunk)
    saved.seek(0)
    with tarfile.open(fileobj=saved, mode="r:") as tar:
        manifest = json.load(_member(tar, "manifest.json"))
        return [_member(tar, name).read() for name in manifest[0]["Layers"]]


def _member(tar: tarfile.TarFile, name: str) -> io.BufferedReader:
    handle = tar.extractfile(name)
    if handle is None:
        raise ValueError(f"{name} is not a file in the image tar")
    return handle  # type: ignore[return-value]


def image_tar(
    tag: str, config: Mapping[str, Any], layers: list[bytes], config_json: bytes | None = None
) -> bytes:
    """An image tar holding the layers and an image config whose "config"
    part is `config`, written as UTF-8 where surrogate escapes (\udc80 to
    \udcff) become the raw bytes they stand for: a config that is not valid
    UTF-8, as a hostile tool can write it. `config_json` replaces the whole
    config file."""
    diff_ids = [f"sha256:{hashlib.sha256(layer).hexdigest()}" for layer in layers]
    document = {
        "architecture": "amd64",
        "os": "linux",
        "created": EPOCH,
        "config": dict(config),
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": EPOCH, "created_by": "tests/helpers/hostile.py"} for _ in layers],
    }
    raw = config_json
    if raw is None:
        raw = json.dumps(document, ensure_ascii=False).encode("utf-8", "surrogateescape")
    config_name = f"{hashlib.sha256(raw).hexdigest()}.json"
    members = {config_name: raw}
    layer_names = []
    for index, layer in enumerate(layers):
        name = f"layer{index}/layer.tar"
        members[name] = layer
        layer_names.append(name)
    manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": layer_names}]
    members["manifest.json"] = json.dumps(manifest).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in members.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return out.getvalue()


class LoadError(RuntimeError):
    pass


@dataclass
class ImageMaker:
    """Makes images with any config and removes them at the end."""

    engine: Engine
    run_id: str
    made: list[str] = field(default_factory=list)

    def load(
        self,
        tag: str,
        config: Mapping[str, Any],
        layers: list[bytes],
        *,
        config_json: bytes | None = None,
    ) -> str:
        """Load an image; its config gets the run label unless `config_json`
        is given (then the caller labels it). Returns the image id."""
        labelled = dict(config)
        if config_json is None:
            labelled["Labels"] = {**(config.get("Labels") or {}), RUN_LABEL: self.run_id}
        data = image_tar(tag, labelled, layers, config_json)
        self.made.append(tag)
        for message in self.engine.client.api.load_image(data):
            if "error" in message:
                raise LoadError(message["error"])
        return str(self.engine.client.images.get(tag).id)

    def track(self, tag: str) -> str:
        """Remove this image (made some other way) at the end too."""
        self.made.append(tag)
        return tag

    def remove_all(self) -> None:
        for tag in reversed(self.made):
            self.engine.remove_image(tag)
        self.made.clear()


def image_maker(engine: Engine) -> Iterator[ImageMaker]:
    maker = ImageMaker(engine, engine.new_run_id())
    try:
        yield maker
    finally:
        maker.remove_all()
