"""How long writing the SBOM takes as the files no OS package owns grow
(a node_modules, a venv): figures, not a test. CPU seconds of the writer
alone, best of three, for CycloneDX 1.5 and SPDX 2.3; the target is 60,000
files in under 2 s, and time that grows with the files, not their square.

    python benchmarks/sbom.py [--files 1000,4000,16000,60000]
"""

from __future__ import annotations

import argparse
import hashlib
import time
from datetime import UTC, datetime

from slimmer.components import AppComponent, Ecosystem
from slimmer.packages import KeptPackages, OsRelease, PackageManager
from slimmer.sbom import SbomFormat
from slimmer.sbom.model import ImageSubject, SbomFile, SbomInput
from slimmer.sbom.render import render_sbom


def document(count: int) -> SbomInput:
    files = tuple(
        SbomFile(
            f"/app/node_modules/m{i}/index.js",
            10,
            hashlib.sha256(str(i).encode()).hexdigest(),
            hashlib.sha1(str(i).encode()).hexdigest(),
        )
        for i in range(count)
    )
    claimed = tuple(item.path for item in files[: count // 2])
    return SbomInput(
        subject=ImageSubject(
            name="app:micro",
            tags=("app:micro",),
            image_id="sha256:" + "a" * 64,
            digests=(),
            source_image="app:fat",
            source_id="sha256:" + "b" * 64,
            created=datetime(2026, 1, 1, tzinfo=UTC),
        ),
        tool_version="bench",
        packages=KeptPackages(PackageManager.DPKG, (), OsRelease(id="debian", version_id="12")),
        components=(
            AppComponent(Ecosystem.NPM, "left-pad", "1.3.0", "/app/package.json", claimed),
        ),
        files=files,
    )


def cpu_seconds(data: SbomInput, form: SbomFormat) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        render_sbom(data, form)
        best = min(best, time.process_time() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", default="1000,4000,16000,60000")
    counts = [int(n) for n in parser.parse_args().files.split(",")]
    print(f"{'files':>8}  {'cyclonedx s':>12}  {'spdx s':>8}  {'µs/file':>8}")
    for count in counts:
        data = document(count)
        cdx, spdx = (cpu_seconds(data, form) for form in SbomFormat)
        print(f"{count:>8}  {cdx:>12.3f}  {spdx:>8.3f}  {1e6 * max(cdx, spdx) / count:>8.1f}")


if __name__ == "__main__":
    main()
