"""The SBOM document in the format asked for."""

from __future__ import annotations

from slimmer.sbom.cyclonedx import render_cyclonedx
from slimmer.sbom.formats import SbomFormat
from slimmer.sbom.model import SbomInput
from slimmer.sbom.spdx import render_spdx


def render_sbom(data: SbomInput, form: SbomFormat) -> str:
    """The SBOM document as text, in the format asked for."""
    return render_cyclonedx(data) if form is SbomFormat.CYCLONEDX else render_spdx(data)
