"""The journey suite: what README.md tells a user to type, typed as a user
would (`make demo`, then the tour's blocks, each line through bash) in a
clean copy of this checkout, and each micro image checked with plain
`docker`, not with slim's own verify."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.fixture(autouse=True)
def _journeys_leave_nothing(no_leftovers: None) -> None:
    """Every journey leaves no container slim made (the session's prefix)."""


@dataclass(frozen=True)
class Checkout:
    """A clean copy of the checkout and the names its journeys give images,
    so that other runs on the same engine are never touched."""

    root: Path
    prefix: str  # in front of every image name a journey makes

    def env(self) -> dict[str, str]:
        """The user's shell after `make demo`: slim on PATH from .venv."""
        env = dict(os.environ)
        env["PATH"] = f"{self.root / '.venv' / 'bin'}:{env.get('PATH', '')}"
        env.pop("VIRTUAL_ENV", None)
        return env

    def run(self, command: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        """One line as a user types it, in bash, from the checkout's root."""
        return subprocess.run(
            ["bash", "-c", command],
            cwd=self.root,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def tracked_files(repo: Path) -> list[str]:
    """What a clone of this checkout would hold: tracked files and new ones
    that are not ignored (so uncommitted work is what is tested), never
    .venv, .slim or other ignored leftovers."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=repo,
        capture_output=True,
        check=True,
    ).stdout
    return [os.fsdecode(name) for name in listed.split(b"\0") if name]


@pytest.fixture(scope="session")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Checkout]:
    root = tmp_path_factory.mktemp("journey") / "slim"
    for name in tracked_files(REPO):
        source = REPO / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the working tree
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
    yield Checkout(root, f"j{uuid.uuid4().hex[:8]}-")
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def demo(checkout: Checkout) -> subprocess.CompletedProcess[str]:
    """`make demo`, the README's first command, in the clean checkout (it
    makes .venv there, which the other journeys then use)."""
    env = checkout.env()
    env["SLIM_MICRO_TAG"] = f"{checkout.prefix}nginx:micro"
    return subprocess.run(
        ["make", "demo"],
        cwd=checkout.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )


def docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The docker CLI, as a user would check an image."""
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture
def made_images(checkout: Checkout) -> Iterator[None]:
    """Remove the images a journey named (with the checkout's prefix)."""
    yield
    listed = docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    mine = [name for name in listed if name.startswith(checkout.prefix)]
    if mine:
        docker("rmi", "--force", *mine)
