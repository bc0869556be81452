"""Shared fixtures. Integration tests get a real engine; in CI (CI=true) a
missing engine fails the run, elsewhere it skips them with the reason."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from slimmer.engine import Engine, Leftover
from slimmer.errors import EngineError
from slimmer.sensorcache import PREFIX_LABEL, SENSOR_LABEL
from tests.helpers.images import context_of

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
FAT_NGINX = os.environ.get("SLIM_FAT_TAG", "nginx-build")

# Every run of this test session (in-process, or a slim process it starts)
# has an id starting with this prefix, so the session finds and removes
# exactly what it made; other slim runs may share the engine.
SESSION_PREFIX = f"t{uuid.uuid4().hex[:8]}-"
os.environ["SLIM_RUN_PREFIX"] = SESSION_PREFIX


def session_tag(name: str) -> str:
    """An image name of this session's own ("verify:good" ->
    "slim-test-t1a2b3c4d-verify:good"): two test sessions on one engine
    never build over, or remove, each other's images."""
    return f"slim-test-{SESSION_PREFIX}{name}"


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    try:
        connected = Engine.from_environment(os.environ, run_prefix=SESSION_PREFIX)
    except EngineError as exc:
        message = f"{exc.message}; {exc.hint}"
        if IN_CI:
            pytest.fail(f"CI needs a Docker engine: {message}", pytrace=False)
        pytest.skip(message)
    yield connected
    # The sensor volumes this session's runs made (slimmer.sensorcache): a
    # session cleans up what it made; the next one makes its own again.
    for volume in connected.volumes_labelled(SENSOR_LABEL):
        if volume.labels.get(PREFIX_LABEL) == SESSION_PREFIX:
            connected.remove_volume(volume.name)
    connected.close()


@pytest.fixture
def run_id(engine: Engine) -> str:
    return engine.new_run_id()


def leftover_keys(items: list[Leftover]) -> set[tuple[str, str]]:
    return {(item.kind, item.name) for item in items}


@pytest.fixture
def no_leftovers(engine: Engine) -> Iterator[None]:
    """Fail the test when it leaves anything labelled io.slim.run behind;
    remove what it left so the next test starts clean."""
    before = leftover_keys(engine.leftovers(prefix=SESSION_PREFIX))
    yield
    after = engine.leftovers(prefix=SESSION_PREFIX)
    new = [item for item in after if (item.kind, item.name) not in before]
    for item in new:
        engine.remove_leftovers(item.run_id)
    if new:
        pytest.fail(f"left behind on the engine: {new}", pytrace=False)


FIXTURE_LABEL = "io.slim.fixture"


@pytest.fixture(scope="session")
def fixture_image(engine: Engine) -> Callable[[str], str]:
    """Build fixtures/<name> (once per session; the layer cache makes it
    quick afterwards) and return its tag."""
    built: dict[str, str] = {}

    def build(name: str) -> str:
        if name not in built:
            tag = f"slim-fixture-{name}:latest"
            engine.build(context_of(REPO / "fixtures" / name), tag, labels={FIXTURE_LABEL: name})
            built[name] = tag
        return built[name]

    return build


@pytest.fixture(scope="session")
def fat_nginx(engine: Engine) -> str:
    """The fat nginx image of Dockerfile.build (built by `make test`; built
    here when pytest runs alone)."""
    if not engine.image_exists(FAT_NGINX):
        subprocess.run(["bash", str(REPO / "scripts/fat-image.sh")], check=True)
    return FAT_NGINX
