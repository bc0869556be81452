"""The sensor on the engine: one copy of the bundle per engine, kept in a
volume between runs and mounted read-only into each sensor container, so
that a sensor container costs a create and a start instead of copying the
bundle (25 MB) into it.

- The volume is named `slim-sensor-<digest>-<random>` and labelled
  `io.slim.sensor=<sha256 of the bundle tar>`: two slim versions (two
  bundles) never share one. It carries no `io.slim.run` label: it outlives
  the run that made it; `slim prune` removes it.
- It is trusted only when this machine's cache (next to the bundle) records
  it by name and creation time: slim records a volume it made and filled
  itself (its name is random, so no one made it first), or one it found
  with the label and compared with the bundle, file by file. A volume that
  says it holds the sensor and does not is never used.
- It is filled and compared through a container that is created, never
  started, with the volume mounted; nothing of the image runs with the
  volume writable. Sensor containers mount it read-only: the app cannot
  change the sensor for later runs.
- Where the engine cannot do any of this, the bundle is copied into each
  container as before (sensor_volume says None).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from slimmer.bundle import Bundle
from slimmer.engineinfo import ContainerRef, VolumeInfo, VolumeMount, basename
from slimmer.errors import EngineError
from slimmer.protocol import SensorLayout

if TYPE_CHECKING:
    from slimmer.engine import Engine

log = logging.getLogger(__name__)

SENSOR_LABEL = "io.slim.sensor"  # the sha256 of the bundle tar the volume holds
PREFIX_LABEL = "io.slim.sensor.prefix"  # SLIM_RUN_PREFIX of the run that made it
VOLUME_PREFIX = "slim-sensor-"
MAX_RECORDS = 16  # volumes remembered per bundle (engines this machine uses)
MAX_CHECKED = 3  # unknown volumes compared with the bundle, at most, per run
HELPER_COMMAND = ["/slim-never-started"]
FILL_TRIES = 5


@dataclass(frozen=True)
class Known:
    """A volume this machine trusts to hold the bundle: its name, and its
    CreatedAt as the engine said it once the bundle was in (for Docker's
    local driver, the mtime of the volume's top directory)."""

    name: str
    created: str


def records_path(bundle: Bundle) -> Path:
    return bundle.path.parent / f"engine-sensor-{bundle.digest[:16]}.json"


def read_records(bundle: Bundle) -> list[Known]:
    try:
        entries = json.loads(records_path(bundle).read_text(encoding="utf-8"))
        return [Known(str(e["name"]), str(e["created"])) for e in entries]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def add_record(bundle: Bundle, known: Known) -> None:
    """Remember a trusted volume (newest first); written atomically, as
    other slim processes read the file."""
    records = [known, *(r for r in read_records(bundle) if r.name != known.name)]
    path = records_path(bundle)
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".partial")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump([r.__dict__ for r in records[:MAX_RECORDS]], out)
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def sensor_volume(engine: Engine, image: str, bundle: Bundle) -> str | None:
    """The volume on this engine that holds exactly this bundle, made on
    first use (through a container of `image`, which is on the engine);
    None when the engine cannot keep one: then the bundle is copied."""
    if bundle.digest in engine.sensor_volumes:
        return engine.sensor_volumes[bundle.digest]
    try:
        name = recorded(engine, bundle) or checked(engine, image, bundle)
        name = name or made(engine, image, bundle)
    except (EngineError, OSError) as exc:
        log.debug("the sensor is copied into each container: %s", exc)
        name = None
    engine.sensor_volumes[bundle.digest] = name
    return name


def forget(engine: Engine, bundle: Bundle, name: str) -> None:
    """The volume did not serve (removed meanwhile): copy from now on. An
    engine makes a missing named volume when a container mounts it: that
    empty, unlabelled one goes."""
    engine.sensor_volumes[bundle.digest] = None
    try:
        info = engine.volume(name)
        if info is not None and SENSOR_LABEL not in info.labels:
            engine.remove_volume(name)
    except EngineError as exc:
        log.debug("leaving %s: %s", name, exc)


def trusted(info: VolumeInfo | None, known: Known, bundle: Bundle) -> bool:
    return (
        info is not None
        and info.created == known.created
        and info.labels.get(SENSOR_LABEL) == bundle.digest
    )


def recorded(engine: Engine, bundle: Bundle) -> str | None:
    """A volume this machine made or checked, still as it was then."""
    for known in read_records(bundle):
        if trusted(engine.volume(known.name), known, bundle):
            return known.name
    return None


def checked(engine: Engine, image: str, bundle: Bundle) -> str | None:
    """A volume with the bundle's label that this machine does not know
    (another machine made it, or the cache was emptied), once its content is
    the bundle's, file by file."""
    known = {r.name for r in read_records(bundle)}
    candidates = [
        info
        for info in engine.volumes_labelled(SENSOR_LABEL, bundle.digest)
        if info.name not in known and info.name.startswith(VOLUME_PREFIX)
    ]
    for info in sorted(candidates, key=lambda i: i.created, reverse=True)[:MAX_CHECKED]:
        if holds_bundle(engine, image, info.name, bundle):
            add_record(bundle, Known(info.name, info.created))
            return info.name
        log.warning(
            "the volume %s on the engine is labelled as slim's sensor but does not hold it: "
            "not used (slim prune removes it)",
            info.name,
        )
    return None


def made(engine: Engine, image: str, bundle: Bundle) -> str:
    """A new volume, filled with the bundle and recorded."""
    name = f"{VOLUME_PREFIX}{bundle.digest[:16]}-{secrets.token_hex(4)}"
    labels = {SENSOR_LABEL: bundle.digest, PREFIX_LABEL: engine.run_prefix}
    engine.create_volume(name, labels)
    try:
        mount = SensorLayout.new().root  # a path no image has
        with engine.container(
            image,
            engine.new_run_id(),
            entrypoint=HELPER_COMMAND,
            command=[],
            user="0",
            volumes=(VolumeMount(name, mount, read_only=False),),
        ) as helper:
            put_bundle(engine, helper, bundle, mount)
        # Docker's local driver gives the mtime of the volume's top directory
        # as its CreatedAt: what it says once the bundle is in is recorded.
        filled = engine.volume(name)
        if filled is None:
            raise EngineError(f"the volume {name} went away while slim filled it")
    except BaseException:
        engine.remove_volume(name)
        raise
    add_record(bundle, Known(name, filled.created))
    log.debug("the sensor is kept on the engine in the volume %s", name)
    return name


def put_bundle(engine: Engine, container: ContainerRef, bundle: Bundle, path: str) -> None:
    """Unpack the bundle at `path` of a created container (a volume mounted
    there, or its own tree). Podman 4.3 fails such a copy now and then
    ("passing bulk input to subprocess: write |1: broken pipe": 4 of 24
    here, on a loaded machine, into a volume or not); unpacking again
    overwrites what the failed one left, so a few tries are made."""
    for attempt in range(1, FILL_TRIES + 1):
        try:
            with bundle.path.open("rb") as handle:
                engine.put_archive(container, handle, path)
            return
        except EngineError as exc:
            if attempt == FILL_TRIES:
                raise
            log.debug("filling the sensor volume failed (%s); again", exc.message)


@dataclass(frozen=True)
class Member:
    kind: bytes  # the tar type
    mode: int
    size: int
    link: str
    sha256: str


_MANIFESTS: dict[str, dict[str, Member]] = {}


def manifest_of(stream: BinaryIO, top: str | None = None) -> dict[str, Member]:
    """Every member of a tar stream by its path, with a digest of its bytes.
    `top`: the directory an engine archived, whose name Docker puts in front
    of every member (Podman does not)."""
    members: dict[str, Member] = {}
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            name = member.name.strip("/").removeprefix("./")
            if top is not None and (name == top or name.startswith(top + "/")):
                name = name[len(top) + 1 :]
            if name in ("", "."):
                continue
            digest = hashlib.sha256()
            if member.isreg():
                handle = tar.extractfile(member)
                if handle is not None:
                    while chunk := handle.read(1 << 20):
                        digest.update(chunk)
            members[name] = Member(
                member.type, member.mode & 0o7777, member.size, member.linkname, digest.hexdigest()
            )
    return members


def bundle_manifest(bundle: Bundle) -> dict[str, Member]:
    if bundle.digest not in _MANIFESTS:
        with bundle.path.open("rb") as handle:
            _MANIFESTS[bundle.digest] = manifest_of(handle)
    return _MANIFESTS[bundle.digest]


def holds_bundle(engine: Engine, image: str, name: str, bundle: Bundle) -> bool:
    """Whether a volume holds exactly the bundle's files (names, kinds,
    modes, sizes, link targets, bytes), as the engine's archive shows it
    through a container that mounts it read-only and never starts."""
    mount = SensorLayout.new().root
    with (
        engine.container(
            image,
            engine.new_run_id(),
            entrypoint=HELPER_COMMAND,
            command=[],
            user="0",
            volumes=(VolumeMount(name, mount),),
        ) as helper,
        engine.open_archive(helper, mount) as archive,
    ):
        try:
            found = manifest_of(archive, top=basename(mount))
        except tarfile.TarError:
            return False
    return found == bundle_manifest(bundle)
