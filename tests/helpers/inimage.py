"""Run a piece of slim's pure core inside a container of an image, the way
the sensor runs: the sensor bundle's CPython (nothing of the image's own is
needed), slimmer's sources copied beside it, a JSON answer back. For pure
modules the sensor does not import yet (packages, ...)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

from slimmer.bundle import sensor_bundle
from slimmer.engine import Engine
from slimmer.protocol import (
    BUNDLE_LIBDIR,
    BUNDLE_LOADER,
    BUNDLE_PYTHON,
    SENSOR_ENV,
    SensorLayout,
)

REPO = Path(__file__).resolve().parent.parent.parent
LAYOUT = SensorLayout("/.slim-probe")
PROBE_DIR = LAYOUT.path("probe")
RESULT = LAYOUT.result_path
PRELUDE = f"""\
import json, sys
sys.path.insert(0, {PROBE_DIR!r})
with open({PROBE_DIR + "/input.json"!r}, encoding="utf-8") as handle:
    INPUT = json.load(handle)
def answer(value):
    with open({RESULT!r}, "w", encoding="utf-8") as handle:
        json.dump(value, handle)
"""


def _payload(script: str, data: Any) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted((REPO / "slimmer").glob("*.py")):
            tar.add(path, arcname=f"{PROBE_DIR.lstrip('/')}/slimmer/{path.name}")
        for name, content in (
            ("probe.py", (PRELUDE + script).encode()),
            ("input.json", json.dumps(data).encode()),
        ):
            info = tarfile.TarInfo(f"{PROBE_DIR.lstrip('/')}/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        for directory in (LAYOUT.run_dir, LAYOUT.bundle_dir):
            member = tarfile.TarInfo(directory.lstrip("/"))
            member.type, member.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(member)
    return buffer.getvalue()


def run_in_image(
    engine: Engine, image: str, run_id: str, cache_dir: Path, script: str, data: Any = None
) -> Any:
    """Run `script` (it sees INPUT and calls answer(value)) as root in a
    container of `image`; returns the answer."""
    command = [LAYOUT.in_bundle(BUNDLE_LOADER), "--library-path", LAYOUT.in_bundle(BUNDLE_LIBDIR)]
    command += [LAYOUT.in_bundle(BUNDLE_PYTHON), "-I", "-S", "-B", f"{PROBE_DIR}/probe.py"]
    with engine.container(
        image, run_id, entrypoint=command, command=[], user="0", environment=SENSOR_ENV
    ) as container:
        engine.put_archive(container, _payload(script, data))
        with sensor_bundle(cache_dir).path.open("rb") as handle:
            engine.put_archive(container, handle, LAYOUT.bundle_dir)
        engine.start(container)
        status = engine.wait(container, 300)
        output = engine.logs(container).decode("utf-8", "replace")
        assert status == 0, f"the probe failed in {image} (exit {status}):\n{output[-3000:]}"
        result = engine.get_file(container, RESULT, 1 << 28)
        assert result is not None, f"the probe wrote no answer:\n{output[-3000:]}"
        return json.loads(result)
