"""The sensor is on the engine once: a volume per bundle, made on first use,
mounted read-only into each sensor container; never trusted on its label
alone; two bundles (two slim versions) side by side; `slim prune` removes
it. Runs on Docker here and on rootful and rootless Podman in their lane.

Each test gets a cache directory of its own (with a copy of the bundle), so
the volumes it sees made are its own, and it removes them."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from slimmer.bundle import Bundle, sensor_bundle
from slimmer.cli import default_cache_dir
from slimmer.engine import RUN_LABEL, Engine
from slimmer.engineinfo import VolumeMount
from slimmer.owner import OWNER_LABEL, Owner, current_owner, start_time, this_machine
from slimmer.protocol import InventoryJob, InventoryResult, SensorLayout
from slimmer.runner import run_sensor_once, sensor_container
from slimmer.sensorcache import (
    PREFIX_LABEL,
    SENSOR_LABEL,
    put_bundle,
    read_records,
    records_path,
    sensor_volume,
)
from tests.conftest import SESSION_PREFIX
from tests.helpers.bundles import another_version
from tests.helpers.slimrun import run_slim

pytestmark = [pytest.mark.integration, pytest.mark.engine_lane]


@pytest.fixture
def bundle(tmp_path: Path) -> Bundle:
    """The sensor bundle, in a cache of this test's own."""
    cached = sensor_bundle(default_cache_dir())
    copy = tmp_path / "cache" / cached.path.name
    copy.parent.mkdir()
    shutil.copyfile(cached.path, copy)
    return Bundle(copy, cached.digest)


@pytest.fixture
def other_bundle(bundle: Bundle, tmp_path: Path) -> Bundle:
    """Another slim version's bundle: the same sensor and one more file."""
    return another_version(bundle, tmp_path / "other")


@pytest.fixture
def image(fixture_image: Callable[[str], str]) -> str:
    return fixture_image("healthuser")


@pytest.fixture
def fresh_engine(engine: Engine) -> Iterator[Engine]:
    """A client of its own (the volumes a client found are remembered in it);
    removes the sensor volumes its test made."""
    before = {v.name for v in engine.volumes_labelled(SENSOR_LABEL)}
    yield another_client(engine)
    for volume in engine.volumes_labelled(SENSOR_LABEL):
        if volume.name not in before:
            engine.remove_volume(volume.name)


def another_client(engine: Engine) -> Engine:
    """What another slim process would have: nothing found yet."""
    return Engine(
        engine.client, engine.run_prefix, endpoint=engine.endpoint, version=engine.version_info
    )


def mounts_of(engine: Engine, container_id: str) -> list[dict[str, object]]:
    return list(engine.client.api.inspect_container(container_id).get("Mounts") or [])


def inventory(engine: Engine, image: str, bundle: Bundle) -> InventoryResult:
    return run_sensor_once(engine, image, bundle, InventoryJob(), InventoryResult)


def fill(engine: Engine, image: str, name: str, bundle: Bundle, labels: dict[str, str]) -> None:
    """Make a volume and put a bundle in it, as someone other than slim could."""
    engine.create_volume(name, labels)
    mount = SensorLayout.new().root
    with engine.container(
        image,
        engine.new_run_id(),
        entrypoint=["/nothing"],
        command=[],
        user="0",
        volumes=(VolumeMount(name, mount, read_only=False),),
    ) as helper:
        put_bundle(engine, helper, bundle, mount)


@pytest.mark.usefixtures("no_leftovers")
def test_the_sensor_is_kept_on_the_engine_and_mounted_read_only(
    fresh_engine: Engine, image: str, bundle: Bundle
) -> None:
    engine = fresh_engine
    with sensor_container(engine, image, bundle, InventoryJob(), engine.new_run_id()) as sensor:
        mounts = mounts_of(engine, sensor.container.id)
        assert sensor.wait_exit(120) == 0
        assert isinstance(sensor.result_of(InventoryResult), InventoryResult)
    (mount,) = mounts
    name = str(mount["Name"])
    assert name.startswith(f"slim-sensor-{bundle.digest[:16]}-")
    assert mount["Destination"] == sensor.layout.bundle_dir and mount["RW"] is False
    info = engine.volume(name)
    assert info is not None and info.labels[SENSOR_LABEL] == bundle.digest
    assert [r.name for r in read_records(bundle)] == [name]
    # Another slim process (a new client) finds it through the record.
    again = another_client(engine)
    assert sensor_volume(again, image, bundle) == name
    assert inventory(again, image, bundle).files > 0


@pytest.mark.usefixtures("no_leftovers")
def test_two_slim_versions_side_by_side(
    fresh_engine: Engine, image: str, bundle: Bundle, other_bundle: Bundle
) -> None:
    engine = fresh_engine
    assert bundle.digest != other_bundle.digest
    with (
        sensor_container(engine, image, bundle, InventoryJob(), engine.new_run_id()) as first,
        sensor_container(
            engine, image, other_bundle, InventoryJob(), engine.new_run_id()
        ) as second,
    ):
        names = {str(m["Name"]) for c in (first, second) for m in mounts_of(engine, c.container.id)}
        assert first.wait_exit(120) == 0 and second.wait_exit(120) == 0
        assert first.result_of(InventoryResult).files == second.result_of(InventoryResult).files
    assert len(names) == 2
    assert {engine.volume(n).labels[SENSOR_LABEL] for n in names if engine.volume(n)} == {
        bundle.digest,
        other_bundle.digest,
    }


@pytest.mark.usefixtures("no_leftovers")
def test_a_volume_made_by_someone_else_is_used_only_when_it_holds_the_bundle(
    fresh_engine: Engine,
    image: str,
    bundle: Bundle,
    other_bundle: Bundle,
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = fresh_engine
    labels = {SENSOR_LABEL: bundle.digest}
    forged = f"slim-sensor-{bundle.digest[:16]}-forged00"
    fill(engine, image, forged, other_bundle, labels)  # one file more than the bundle
    with caplog.at_level(logging.WARNING, logger="slimmer"):
        chosen = sensor_volume(engine, image, bundle)
    assert chosen is not None and chosen != forged
    assert forged in caplog.text
    # The same bundle, put there by another machine's slim: checked, then used.
    twin = f"slim-sensor-{bundle.digest[:16]}-twin0000"
    fill(engine, image, twin, bundle, labels)
    records_path(bundle).unlink()
    elsewhere = another_client(engine)
    assert sensor_volume(elsewhere, image, bundle) in (twin, chosen)
    assert inventory(elsewhere, image, bundle).files > 0


@pytest.mark.usefixtures("no_leftovers")
def test_a_recorded_volume_made_anew_under_its_name_is_not_trusted(
    fresh_engine: Engine, image: str, bundle: Bundle, other_bundle: Bundle
) -> None:
    engine = fresh_engine
    name = sensor_volume(engine, image, bundle)
    assert name is not None
    assert engine.remove_volume(name)
    time.sleep(1.1)  # a new volume's CreatedAt is another second
    fill(engine, image, name, other_bundle, {SENSOR_LABEL: bundle.digest})
    later = another_client(engine)
    chosen = sensor_volume(later, image, bundle)
    assert chosen is not None and chosen != name


@pytest.mark.usefixtures("no_leftovers")
def test_a_volume_removed_meanwhile_means_a_copy(
    fresh_engine: Engine, image: str, bundle: Bundle
) -> None:
    engine = fresh_engine
    name = sensor_volume(engine, image, bundle)
    assert name is not None and engine.remove_volume(name)
    result = inventory(engine, image, bundle)  # the client still thinks it is there
    assert result.files > 0
    assert engine.sensor_volumes[bundle.digest] is None
    assert engine.volume(name) is None  # the empty one the engine made on the way is gone


def dead_owner() -> str:
    """The owner label of a process of this machine that has ended."""
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    start = start_time(ended.pid) or 1
    ended.wait()
    return Owner(this_machine(), ended.pid, start).label()


@pytest.mark.usefixtures("no_leftovers")
def test_prune_removes_the_cached_sensor_and_the_containers_of_dead_runs(
    engine: Engine, image: str, bundle: Bundle
) -> None:
    prefix = f"{SESSION_PREFIX}pr{uuid.uuid4().hex[:6]}-"
    made = []
    for name, owner in (("dead", dead_owner()), ("alive", current_owner()), ("away", "x/1/2")):
        created = engine.client.api.create_container(
            image,
            command=["true"],
            name=f"{prefix}{name}",
            labels={RUN_LABEL: f"{prefix}{name}", OWNER_LABEL: owner},
        )
        made.append(created["Id"])
    ours = f"slim-sensor-{bundle.digest[:16]}-{prefix.rstrip('-')}"
    theirs = f"slim-sensor-{bundle.digest[:16]}-other{prefix.rstrip('-')}"
    engine.create_volume(ours, {SENSOR_LABEL: bundle.digest, PREFIX_LABEL: prefix})
    engine.create_volume(theirs, {SENSOR_LABEL: bundle.digest, PREFIX_LABEL: "another-"})
    try:
        ran = run_slim("prune", env={"SLIM_RUN_PREFIX": prefix})
        assert ran.exit_code == 0, ran.describe()
        assert sorted(ran.stdout.splitlines()) == [f"container {prefix}dead", f"volume {ours}"]
        left = {c["Names"][0].lstrip("/") for c in engine.client.api.containers(all=True)}
        assert f"{prefix}dead" not in left
        assert {f"{prefix}alive", f"{prefix}away"} <= left
        assert engine.volume(ours) is None and engine.volume(theirs) is not None
        assert "another machine" in ran.stderr and "is going on" in ran.stderr
    finally:
        for container in made:
            engine.remove_container(container)
        engine.remove_volume(ours)
        engine.remove_volume(theirs)
