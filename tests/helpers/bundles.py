"""Sensor bundles as two slim versions would have them."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

from slimmer.bundle import Bundle, file_digest


def another_version(bundle: Bundle, directory: Path) -> Bundle:
    """Another slim version's bundle: the same sensor and one more file, so
    another digest."""
    path = directory / "sensor-other.tar"
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(bundle.path, path)
    with tarfile.open(path, "a") as tar:
        member = tarfile.TarInfo("VERSION")
        member.size = 2
        tar.addfile(member, io.BytesIO(b"b\n"))
    return Bundle(path, file_digest(path))
