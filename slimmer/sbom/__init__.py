"""The micro image's SBOM, in CycloneDX 1.5 or SPDX 2.3 JSON: what the
image is (its tags, image id and, once pushed, digests; the fat image it
was made from; slim as the tool), the operating system, the OS packages
with a kept file (with the purls scanners match vulnerabilities on), the
app's own components (binaries by their version strings, Python, Node and
Ruby packages by their metadata), and the files no component claims, with
their digests.

Both documents are written directly as JSON (`cyclonedx.py`, `spdx.py`)
from one format-neutral model (`model.py`), in time linear in the number of
files; the tests validate them with each format's own validator. Output is
deterministic: the serial number and namespace come from the image, the
timestamp is the fat image's creation time.

The package itself loads only the formats' names (`formats.py`): the model
and the writers (`model.py`, `render.py`) load where an SBOM is written."""

from slimmer.sbom.formats import SbomFormat

__all__ = ["SbomFormat"]
