from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _integration_needs_engine_and_cleans_up(no_leftovers: None) -> None:
    """Every integration test talks to a real engine and leaves nothing."""
