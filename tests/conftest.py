"""Shared fixtures. Integration tests get a real engine; in CI (CI=true) a
missing engine fails the run, elsewhere it skips them with the reason."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import slimmer.engine
from slimmer.engine import Engine, Leftover, new_run_id
from slimmer.errors import EngineError

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
FAT_NGINX = os.environ.get("SLIM_FAT_TAG", "nginx-build")


# Other sessions share the engine: the leftover checks below judge and remove
# only runs whose id slim handed out in this process (slim run as a separate
# process removes its own containers; its runs are not tracked here).
_NEW_RUN_ID = slimmer.engine.new_run_id
RUN_IDS_MADE_HERE: set[str] = set()


def _recording_new_run_id() -> str:
    run_id = _NEW_RUN_ID()
    RUN_IDS_MADE_HERE.add(run_id)
    return run_id


def record_run_ids() -> None:
    """Make every loaded slimmer module's new_run_id record what it hands out."""
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("slimmer") and (
            getattr(module, "new_run_id", None) is _NEW_RUN_ID
        ):
            module.new_run_id = _recording_new_run_id  # type: ignore[attr-defined]


def leftovers_made_here(engine: Engine) -> list[Leftover]:
    record_run_ids()
    return [item for item in engine.leftovers() if item.run_id in RUN_IDS_MADE_HERE]


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    record_run_ids()
    try:
        connected = Engine.connect()
    except EngineError as exc:
        message = f"{exc.message}; {exc.hint}"
        if IN_CI:
            pytest.fail(f"CI needs a Docker engine: {message}", pytrace=False)
        pytest.skip(message)
    yield connected
    connected.close()


@pytest.fixture
def run_id() -> str:
    made = new_run_id()
    RUN_IDS_MADE_HERE.add(made)
    return made


def leftover_keys(items: list[Leftover]) -> set[tuple[str, str]]:
    return {(item.kind, item.name) for item in items}


@pytest.fixture
def no_leftovers(engine: Engine) -> Iterator[None]:
    """Fail the test when it leaves anything labelled io.slim.run behind;
    remove what it left so the next test starts clean."""
    before = leftover_keys(leftovers_made_here(engine))
    yield
    after = leftovers_made_here(engine)
    new = [item for item in after if (item.kind, item.name) not in before]
    for item in new:
        engine.remove_leftovers(item.run_id)
    if new:
        pytest.fail(f"left behind on the engine: {new}", pytrace=False)


FIXTURE_LABEL = "io.slim.fixture"


def context_of(directory: Path) -> io.BytesIO:
    """A build context tar of a fixtures/ directory."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(directory.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(directory)), recursive=False)
    buffer.seek(0)
    return buffer


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
