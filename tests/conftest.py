"""Shared fixtures. Integration tests get a real engine; in CI (CI=true) a
missing engine fails the run, elsewhere it skips them with the reason."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from slimmer.engine import Engine, Leftover, new_run_id
from slimmer.errors import EngineError

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
FAT_NGINX = os.environ.get("SLIM_FAT_TAG", "nginx-build")


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
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
    return new_run_id()


def leftover_keys(items: list[Leftover]) -> set[tuple[str, str]]:
    return {(item.kind, item.name) for item in items}


@pytest.fixture
def no_leftovers(engine: Engine) -> Iterator[None]:
    """Fail the test when it leaves anything labelled io.slim.run behind;
    remove what it left so the next test starts clean."""
    before = leftover_keys(engine.leftovers())
    yield
    after = engine.leftovers()
    new = [item for item in after if (item.kind, item.name) not in before]
    for item in new:
        engine.remove_leftovers(item.run_id)
    if new:
        pytest.fail(f"left behind on the engine: {new}", pytrace=False)


@pytest.fixture(scope="session")
def fat_nginx(engine: Engine) -> str:
    """The fat nginx image of Dockerfile.build (built by `make test`; built
    here when pytest runs alone)."""
    if not engine.image_exists(FAT_NGINX):
        subprocess.run(["bash", str(REPO / "scripts/fat-image.sh")], check=True)
    return FAT_NGINX
