"""--strip and an app that checks the bytes of an ELF file: the file the
app read as data is left as it is (and the report says why), the program
it runs is stripped. Image built here, real slim processes, the micro
image checked with plain `docker run`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers.elfroot import compile_program
from tests.helpers.slimrun import run_slim

APP = """#!/bin/sh
set -e
/opt/app/run
cd /opt/app && sha256sum -c sums
"""


@pytest.fixture
def unstripped(tmp_path: Path) -> bytes:
    """A program with debug sections and a symbol table (gcc -g)."""
    source = '#include <stdio.h>\nint main(void) { puts("ran"); return 0; }\n'
    return compile_program(tmp_path, source, "-g")


@pytest.fixture
def micro_tag(micro_tags) -> str:
    return micro_tags()


def test_an_elf_file_the_app_checks_is_not_stripped(
    image_from, unstripped: bytes, micro_tag: str, tmp_path: Path
) -> None:
    image = image_from(
        {
            "run": unstripped,
            "app.sh": APP,
            "Dockerfile": "FROM debian:bookworm\n"
            "COPY run /opt/app/run\nCOPY run /opt/app/tool\nCOPY app.sh /opt/app/app.sh\n"
            "RUN cd /opt/app && sha256sum tool > sums\n"
            'CMD ["/bin/sh", "/opt/app/app.sh"]\n',
        }
    )
    trace, report = tmp_path / "trace.json", tmp_path / "report.json"
    traced = run_slim("trace", image, "--until-exit", "-o", str(trace))
    assert traced.exit_code == 0 and "tool: OK" in traced.stderr, traced.describe()
    built = run_slim(
        "build", image, "--trace", str(trace), "-t", micro_tag, "--strip", "--report", str(report)
    )
    assert built.exit_code == 0, built.describe()
    ran = subprocess.run(["docker", "run", "--rm", micro_tag], capture_output=True, timeout=120)
    assert ran.returncode == 0 and b"tool: OK" in ran.stdout, ran.stdout + ran.stderr
    strip = json.loads(report.read_text())["strip"]
    assert "/opt/app/run" in {s["path"] for s in strip["stripped"]}  # the program it ran
    left = {p["path"]: p["why"] for p in strip["protected_files"]}
    assert left["/opt/app/tool"].startswith("the app read it")
