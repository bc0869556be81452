"""The JSON Schemas of slim's files and outputs, derived from the
dataclasses that read and write them (slimmer.wire) and shipped in the
package as slimmer/schemas/<name>.json.

    python -m slimmer.schema        rewrite the shipped files
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from slimmer import wire
from slimmer.errors import UsageError

SCHEMA_BASE = "https://slim.invalid/schemas/"


@dataclass(frozen=True)
class Schema:
    name: str  # slim schema NAME, and the file name
    title: str
    cls: type


# `slim schema NAME` and the shipped files; schemas() gives each its dataclass.
NAMES = ("trace", "report", "compare", "verify", "deps", "sensor-config", "sensor-result")


def schemas() -> tuple[Schema, ...]:
    """Each format and the dataclass it is derived from, in NAMES' order.
    Imported here, not above: `slim schema` prints a shipped file and needs
    none of them."""
    from slimmer.compare import COMPARE_SCHEMA, CompareOutput
    from slimmer.depsreport import DEPS_SCHEMA, DepsReport
    from slimmer.protocol import SENSOR_SCHEMA, ResultFile, RunConfig
    from slimmer.report import REPORT_SCHEMA, BuildReport
    from slimmer.trace import TRACE_SCHEMA, Trace
    from slimmer.verify import VERIFY_SCHEMA, VerifyOutcome

    return (
        Schema("trace", f"{TRACE_SCHEMA}: what slim trace recorded", Trace),
        Schema("report", f"{REPORT_SCHEMA}: what slim build put in the micro image", BuildReport),
        Schema("compare", f"{COMPARE_SCHEMA}: slim compare --format json", CompareOutput),
        Schema("verify", f"{VERIFY_SCHEMA}: slim verify --format json", VerifyOutcome),
        Schema("deps", f"{DEPS_SCHEMA}: slim deps --json", DepsReport),
        Schema("sensor-config", f"{SENSOR_SCHEMA}: the job the host gives the sensor", RunConfig),
        Schema("sensor-result", f"{SENSOR_SCHEMA}: the sensor's result file", ResultFile),
    )


def generate(name: str) -> dict[str, Any]:
    schema = _find(name)
    return wire.schema_of(schema.cls, title=schema.title, schema_id=f"{SCHEMA_BASE}{name}.json")


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2) + "\n"


def shipped(name: str) -> str:
    """The schema file shipped in the package."""
    if name not in NAMES:
        raise UsageError(f"no schema named {name!r}", f"one of: {', '.join(NAMES)}")
    return resources.files("slimmer").joinpath("schemas", f"{name}.json").read_text("utf-8")


def _find(name: str) -> Schema:
    for schema in schemas():
        if schema.name == name:
            return schema
    raise UsageError(f"no schema named {name!r}", f"one of: {', '.join(NAMES)}")


def write_all(directory: Path) -> list[Path]:
    written = []
    for schema in schemas():
        path = directory / f"{schema.name}.json"
        path.write_text(render(generate(schema.name)), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_all(Path(__file__).parent / "schemas"):
        sys.stdout.write(f"{written_path}\n")
