from __future__ import annotations

from collections.abc import Iterator

import pytest

from slimmer.engine import Engine
from tests.conftest import SESSION_PREFIX, leftover_keys


@pytest.fixture(autouse=True)
def _integration_needs_engine_and_cleans_up(no_leftovers: None) -> None:
    """Every integration test talks to a real engine and leaves nothing."""


@pytest.fixture(scope="session", autouse=True)
def _session_leaves_nothing(engine: Engine) -> Iterator[None]:
    """At the end of the session, no container, volume or image labelled
    io.slim.run that this session made may remain; other runs' are not
    touched."""
    before = leftover_keys(engine.leftovers(prefix=SESSION_PREFIX))
    yield
    mine = engine.leftovers(prefix=SESSION_PREFIX)
    remaining = [item for item in mine if (item.kind, item.name) not in before]
    engine.remove_leftovers(prefix=SESSION_PREFIX)
    if remaining:
        pytest.fail(f"the test session left these on the engine: {remaining}", pytrace=False)
