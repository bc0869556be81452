"""The SBOM formats slim writes (light: `slim build`'s options name one
before the SBOM's code loads)."""

from __future__ import annotations

from enum import StrEnum


class SbomFormat(StrEnum):
    CYCLONEDX = "cyclonedx"  # CycloneDX 1.5 JSON
    SPDX = "spdx"  # SPDX 2.3 JSON

    @property
    def suffix(self) -> str:
        return ".sbom.json" if self is SbomFormat.CYCLONEDX else ".spdx.json"
