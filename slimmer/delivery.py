"""Where a micro image goes besides the local engine: `--output
docker-archive:FILE` (what `docker save` writes: `docker load` and `podman
load` read it) and `--output oci:DIR` (an OCI image layout: skopeo, podman
and registries' tools read it), both written without a registry.

The OCI layout is made from the engine's docker-archive stream, member by
member, without unpacking any layer: each layer tar is a blob named by its
sha256 (the layer's diff_id, as the image config lists it), the config is
a blob, a manifest references them, and index.json names the manifest by
each tag (`org.opencontainers.image.ref.name`). Layers stay uncompressed
(`application/vnd.oci.image.layer.v1.tar`), so the layout is deterministic:
the same image gives the same bytes. Names in the archive are only matched
against its manifest; every file slim writes is named by a digest it
computed itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, BinaryIO

from slimmer.errors import ExitCode, SlimError, UsageError
from slimmer.outputs import check_output, writing

OCI_LAYOUT_VERSION = "1.0.0"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
REF_NAME = "org.opencontainers.image.ref.name"
MAX_JSON_MEMBER = 64 * 1024 * 1024  # manifest.json, the config: small documents
CHUNK = 1 << 20


class DeliveryError(SlimError):
    """The image could not be written where --output says."""

    exit_code = ExitCode.ERROR


class OutputKind(StrEnum):
    OCI = "oci"
    DOCKER_ARCHIVE = "docker-archive"


@dataclass(frozen=True)
class OutputSpec:
    """One `--output KIND:PATH`."""

    kind: OutputKind
    path: Path

    def describe(self) -> str:
        return f"{self.kind.value}:{self.path}"


def parse_output(text: str) -> OutputSpec:
    """`oci:DIR` or `docker-archive:FILE` (the names skopeo and podman use)."""
    kind, sep, path = text.partition(":")
    kinds = ", ".join(f"{k.value}:PATH" for k in OutputKind)
    if not sep or not path:
        raise UsageError(f"--output {text!r} is not KIND:PATH", f"use one of {kinds}")
    try:
        return OutputSpec(OutputKind(kind), Path(path))
    except ValueError:
        raise UsageError(
            f"--output {text!r}: unknown kind {kind!r}", f"use one of {kinds}"
        ) from None


def check_delivery(spec: OutputSpec) -> None:
    """Before anything runs: the place can be written. An archive is a
    user's output file (slimmer.outputs: a link followed, a FIFO or device
    written into, a regular file replaced whole); an OCI directory is new,
    empty, or already an OCI layout (the image is added to it)."""
    path = spec.path
    if spec.kind is OutputKind.DOCKER_ARCHIVE:
        check_output(path, f"--output {spec.kind.value}")
        return
    if path.exists() and not path.is_dir():
        raise UsageError(f"--output {spec.describe()}: {path} is not a directory")
    if path.is_dir() and any(path.iterdir()) and not (path / "oci-layout").is_file():
        raise UsageError(
            f"--output {spec.describe()}: {path} is neither empty nor an OCI layout",
            "give a new directory, or an existing OCI layout to add the image to",
        )
    parent = path if path.is_dir() else path.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(
            f"--output {spec.describe()}: cannot write in {parent}",
            "create the directory first, or choose another path",
        )


def write_docker_archive(stream: BinaryIO, path: Path) -> None:
    """The engine's `docker save` stream, as it is, into the output."""
    with writing(path, "the image archive") as out:
        shutil.copyfileobj(stream, out, CHUNK)


def _write_whole(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """A file of the OCI layout (slim's own directory): written through a
    private file beside `path`, then renamed over it."""
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            write(out)
        os.chmod(partial, 0o644)
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class Blob:
    digest: str  # "sha256:..."
    size: int


class _BlobStore:
    """blobs/sha256/ of an OCI layout: a blob is written under a temporary
    name while its digest is computed, then renamed to it."""

    def __init__(self, root: Path) -> None:
        self.directory = root / "blobs" / "sha256"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.new: set[str] = set()  # digests this run added (not there before)

    def add_stream(self, source: BinaryIO) -> Blob:
        digest = hashlib.sha256()
        size = 0
        handle, partial = tempfile.mkstemp(dir=self.directory, prefix=".blob-")
        try:
            with os.fdopen(handle, "wb") as out:
                while chunk := source.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
            os.chmod(partial, 0o644)
            target = self.directory / digest.hexdigest()
            if not target.exists():
                self.new.add(digest.hexdigest())
            os.replace(partial, target)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise
        return Blob(f"sha256:{digest.hexdigest()}", size)

    def drop_new_except(self, wanted: Iterable[Blob]) -> None:
        """Remove the blobs this run added that nothing references (the
        engine's own manifests in a newer docker-archive)."""
        keep = {blob.digest[len("sha256:") :] for blob in wanted}
        for digest in self.new - keep:
            (self.directory / digest).unlink(missing_ok=True)

    def add_bytes(self, data: bytes) -> Blob:
        digest = hashlib.sha256(data).hexdigest()
        target = self.directory / digest
        if not target.exists():
            _write_whole(target, lambda out: out.write(data))
        return Blob(f"sha256:{digest}", len(data))


def _json_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Any:
    if member.size > MAX_JSON_MEMBER:
        raise DeliveryError(f"the engine's archive holds an oversized {member.name!r}")
    handle = tar.extractfile(member)
    if handle is None:
        raise DeliveryError(f"the engine's archive has no data for {member.name!r}")
    try:
        return json.loads(handle.read())
    except ValueError:
        raise DeliveryError(f"{member.name!r} in the engine's archive is not JSON") from None


def _canonical(document: Any) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def write_oci_layout(stream: BinaryIO, root: Path, references: Iterable[str]) -> Blob:
    """Make (or add to) an OCI image layout at `root` from a docker-archive
    stream of one image; `references` (its tags) name it in index.json.
    Returns the manifest's blob."""
    root.mkdir(parents=True, exist_ok=True)
    store = _BlobStore(root)
    layer_blobs: dict[str, Blob] = {}
    config: Any = None
    manifest: Any = None
    configs: dict[str, Any] = {}
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            if not member.isreg():
                continue
            if name == "manifest.json":
                manifest = _json_member(tar, member)
            elif name.endswith(".json") and "/" not in name:
                configs[name] = _json_member(tar, member)
            elif name.endswith(".tar") or name.startswith("blobs/sha256/"):
                handle = tar.extractfile(member)
                if handle is not None:
                    layer_blobs[name] = store.add_stream(handle)  # type: ignore[arg-type]
    if not isinstance(manifest, list) or len(manifest) != 1 or not isinstance(manifest[0], dict):
        raise DeliveryError("the engine's archive does not hold exactly one image")
    entry = manifest[0]
    config = configs.get(str(entry.get("Config", "")))
    if config is None and str(entry.get("Config", "")).startswith("blobs/sha256/"):
        config_blob = layer_blobs.pop(str(entry["Config"]), None)
        if config_blob is not None:
            config = json.loads((store.directory / config_blob.digest[7:]).read_bytes())
    layers = [layer_blobs.get(str(name)) for name in entry.get("Layers") or []]
    if config is None or any(blob is None for blob in layers):
        raise DeliveryError("the engine's archive lacks the image's config or a layer")
    diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
    if diff_ids != [blob.digest for blob in layers if blob is not None]:
        raise DeliveryError("the layers of the engine's archive are not the image's diff_ids")
    config_blob = store.add_bytes(_canonical(config))
    manifest_blob = store.add_bytes(
        _canonical(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST_TYPE,
                "config": {
                    "mediaType": CONFIG_TYPE,
                    "digest": config_blob.digest,
                    "size": config_blob.size,
                },
                "layers": [
                    {"mediaType": LAYER_TYPE, "digest": blob.digest, "size": blob.size}
                    for blob in layers
                    if blob is not None
                ],
            }
        )
    )
    store.drop_new_except([*(b for b in layers if b is not None), config_blob, manifest_blob])
    _write_index(root, manifest_blob, list(references), config)
    return manifest_blob


def _write_index(root: Path, manifest: Blob, references: list[str], config: Any) -> None:
    """index.json with a descriptor per reference (the image's tags), those
    already there for other names kept; oci-layout beside it."""
    index_path = root / "index.json"
    kept: list[Any] = []
    if index_path.is_file():
        try:
            existing = json.loads(index_path.read_bytes())
        except ValueError:
            raise DeliveryError(f"{index_path} is not JSON") from None
        names = set(references)
        kept = [
            item
            for item in existing.get("manifests") or []
            if isinstance(item, dict) and (item.get("annotations") or {}).get(REF_NAME) not in names
        ]
    platform = {
        "architecture": str(config.get("architecture") or ""),
        "os": str(config.get("os") or ""),
    }
    descriptors = [
        {
            "mediaType": MANIFEST_TYPE,
            "digest": manifest.digest,
            "size": manifest.size,
            "platform": platform,
            "annotations": {REF_NAME: reference},
        }
        for reference in references or [""]
    ]
    if not references:
        del descriptors[0]["annotations"]
    index = {"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": [*kept, *descriptors]}
    _write_whole(index_path, lambda out: out.write(json.dumps(index, indent=1).encode() + b"\n"))
    layout = root / "oci-layout"
    if not layout.is_file():
        text = json.dumps({"imageLayoutVersion": OCI_LAYOUT_VERSION}).encode()
        _write_whole(layout, lambda out: out.write(text))


def remove_partial_layout(root: Path, existed: bool) -> None:
    """After a failed write into a new directory: remove it (never one that
    was there before)."""
    if not existed:
        shutil.rmtree(root, ignore_errors=True)
