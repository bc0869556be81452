"""The sensor kept on a remote engine: made there on first use (over TCP
and ssh), used again by the next run, one per slim version, and nothing of
it on this machine's engine."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from slimmer.bundle import Bundle, sensor_bundle
from slimmer.cli import default_cache_dir
from slimmer.endpoint import choose_endpoint
from slimmer.engine import Engine
from slimmer.protocol import InventoryJob, InventoryResult
from slimmer.runner import sensor_container
from slimmer.sensorcache import SENSOR_LABEL
from tests.helpers.bundles import another_version
from tests.helpers.slimrun import run_slim
from tests.integration.remote.conftest import FIXTURE, RemoteEngine
from tests.integration.remote.test_remote_engines import engine_env


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[Path]:
    """A cache of this test's own, with the bundle in it."""
    bundle = sensor_bundle(default_cache_dir())
    directory = tmp_path / "cache"
    directory.mkdir()
    shutil.copyfile(bundle.path, directory / bundle.path.name)
    yield directory


@pytest.fixture
def remote(remote_engine: RemoteEngine) -> Iterator[RemoteEngine]:
    """Removes the sensor volumes its test made on the remote engine."""
    before = set(sensor_volumes(remote_engine))
    yield remote_engine
    made = [name for name in sensor_volumes(remote_engine) if name not in before]
    if made:
        remote_engine.docker("volume", "rm", *made)


def digest() -> str:
    return sensor_bundle(default_cache_dir()).digest


def sensor_volumes(remote: RemoteEngine) -> list[str]:
    listed = remote.docker(
        "volume", "ls", "--filter", f"label={SENSOR_LABEL}", "--format", "{{.Name}}"
    )
    return listed.stdout.split()


@pytest.mark.parametrize("transport", ["tcp", "ssh"])
def test_the_sensor_is_made_once_on_a_remote_engine(
    remote: RemoteEngine, cache: Path, engine: Engine, transport: str
) -> None:
    host = remote.tcp_host if transport == "tcp" else remote.ssh_host
    env = engine_env(DOCKER_HOST=host, SLIM_CACHE_DIR=str(cache))
    if transport == "ssh":
        env["HOME"] = str(remote.ssh_home)
    local_before = {v.name for v in engine.volumes_labelled(SENSOR_LABEL)}
    after = []
    for _ in range(2):
        ran = run_slim("compare", FIXTURE, env=env, timeout=300)
        assert ran.exit_code == 0, ran.describe()
        after.append(set(sensor_volumes(remote)))
    ours = {name for name in after[0] if name.startswith(f"slim-sensor-{digest()[:16]}-")}
    assert len(ours) == 1  # made by the first run, or by an earlier test and checked
    assert after[1] == after[0]  # the second run used it
    assert {v.name for v in engine.volumes_labelled(SENSOR_LABEL)} == local_before


def test_two_slim_versions_side_by_side_on_a_remote_engine(
    remote: RemoteEngine, cache: Path, tmp_path: Path
) -> None:
    bundle = sensor_bundle(default_cache_dir())
    ours = Bundle(cache / bundle.path.name, bundle.digest)
    other = another_version(bundle, tmp_path / "other")
    endpoint = choose_endpoint(None, None, {"DOCKER_HOST": remote.tcp_host})
    with Engine.connect(endpoint, run_prefix="remote-") as engine:
        job = InventoryJob()
        with (
            sensor_container(engine, FIXTURE, ours, job, engine.new_run_id()) as first,
            sensor_container(engine, FIXTURE, other, job, engine.new_run_id()) as second,
        ):
            mounted = [
                engine.client.api.inspect_container(run.container.id)["Mounts"][0]["Name"]
                for run in (first, second)
            ]
            assert first.wait_exit(120) == 0 and second.wait_exit(120) == 0
            assert first.result_of(InventoryResult).files == second.result_of(InventoryResult).files
    assert [name.split("-")[2] for name in mounted] == [ours.digest[:16], other.digest[:16]]
    assert set(mounted) <= set(sensor_volumes(remote))


def test_an_ssh_engine_serves_a_run_that_asks_many_kinds_of_things(
    remote: RemoteEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docker-py keeps a channel open per URL it asked; the sshd allows 10
    sessions on a connection. A log stream going on and a dozen kinds of
    requests (as the sensor's volume adds to a run) must all be served."""
    monkeypatch.setenv("HOME", str(remote.ssh_home))  # the ssh key, known_hosts, config
    endpoint = choose_endpoint(None, None, {"DOCKER_HOST": remote.ssh_host})
    with Engine.connect(endpoint, run_prefix="remote-") as engine:
        run_id = engine.new_run_id()
        with engine.container(FIXTURE, run_id, entrypoint=["sleep", "30"], command=[]) as ref:
            engine.start(ref)
            follower = threading.Thread(target=lambda: list(engine.stream_logs(ref)), daemon=True)
            follower.start()  # a log stream going on, as the sensor's output is followed
            time.sleep(1)
            for number in range(12):
                assert engine.volume(f"slim-none-{number}") is None
            assert engine.is_running(ref)
