"""`slim prune`: remove what slim keeps on an engine.

That is the cached sensor (its volumes, slimmer.sensorcache; a container
using one keeps it) and the containers of runs whose slim process ended
without removing them (killed with SIGKILL, a machine that went down): a
container's owner label (slimmer.owner) names the process. Containers of
runs still going on, of another machine's runs (whose processes cannot be
seen from here), or made by a slim without owner labels are left, and said.
With SLIM_RUN_PREFIX set, only what runs with that prefix made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from slimmer.owner import owner_gone
from slimmer.sensorcache import PREFIX_LABEL, SENSOR_LABEL

if TYPE_CHECKING:
    from slimmer.engine import Engine


@dataclass(frozen=True)
class Pruned:
    kind: str  # container | volume
    name: str
    why: str  # why it was removed, or why it was left


@dataclass(frozen=True)
class PruneOutcome:
    removed: tuple[Pruned, ...]
    kept: tuple[Pruned, ...]


def prune(engine: Engine, prefix: str = "") -> PruneOutcome:
    """Remove dead runs' containers and the cached sensor (see the module)."""
    removed: list[Pruned] = []
    kept: list[Pruned] = []
    for item in engine.leftovers(prefix=prefix):
        if item.kind != "container":
            continue
        gone = owner_gone(item.owner) if item.owner else None
        if gone:
            engine.remove_container(item.name)
            removed.append(Pruned("container", item.name, f"run {item.run_id}: its slim ended"))
        elif gone is False:
            kept.append(Pruned("container", item.name, f"run {item.run_id} is going on"))
        elif item.owner:
            kept.append(Pruned("container", item.name, f"run {item.run_id} of another machine"))
        else:
            kept.append(Pruned("container", item.name, f"run {item.run_id}: no owner label"))
    for volume in engine.volumes_labelled(SENSOR_LABEL):
        if not volume.labels.get(PREFIX_LABEL, "").startswith(prefix):
            continue
        if engine.remove_volume(volume.name):
            removed.append(Pruned("volume", volume.name, "the cached sensor"))
        else:
            kept.append(Pruned("volume", volume.name, "the cached sensor, in use"))
    return PruneOutcome(tuple(removed), tuple(kept))
