"""Which engine the tests talk to, asked the way a user would (the docker
CLI, with the same environment), so engine-specific expectations (xfail
markers naming a missing slim fix) can depend on it."""

from __future__ import annotations

import json
import subprocess
from enum import Enum


class EngineKind(Enum):
    DOCKER = "docker"
    PODMAN = "podman"


def engine_kind() -> EngineKind:
    """Podman's compat API names itself in the version's components."""
    result = subprocess.run(
        ["docker", "version", "--format", "{{json .Server.Components}}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    components = json.loads(result.stdout or "[]") or []
    names = {component.get("Name", "") for component in components}
    return EngineKind.PODMAN if "Podman Engine" in names else EngineKind.DOCKER
