from __future__ import annotations

from collections.abc import Iterator

import pytest

from slimmer.engine import Engine
from tests.conftest import leftover_keys, leftovers_made_here


@pytest.fixture(autouse=True)
def _integration_needs_engine_and_cleans_up(no_leftovers: None) -> None:
    """Every integration test talks to a real engine and leaves nothing."""


@pytest.fixture(scope="session", autouse=True)
def _session_leaves_nothing(engine: Engine) -> Iterator[None]:
    """At the end of the session, no container, volume or image labelled
    io.slim.run that this session made may remain."""
    before = leftover_keys(leftovers_made_here(engine))
    yield
    mine = leftovers_made_here(engine)
    remaining = [item for item in mine if (item.kind, item.name) not in before]
    for run_id in sorted({item.run_id for item in mine}):
        engine.remove_leftovers(run_id)
    if remaining:
        pytest.fail(f"the test session left these on the engine: {remaining}", pytrace=False)
