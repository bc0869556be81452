from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.helpers.elfroot import ElfRoot


@pytest.fixture
def elfroot(tmp_path: Path) -> ElfRoot:
    if shutil.which("gcc") is None:
        pytest.fail("gcc is needed to build the test roots (apt-get install gcc)")
    return ElfRoot(tmp_path)


@pytest.fixture
def glibc_root(elfroot: ElfRoot) -> ElfRoot:
    if os.geteuid() != 0:
        pytest.fail("the real-loader oracle chroots: run the tests as root")
    return elfroot.glibc_base()
