"""Run slim as a user does: its own process, with the environment a test
chooses (DOCKER_HOST, DOCKER_CONTEXT, HOME, TLS variables). Engine selection
is read from the environment when slim starts, so tests of engines run slim
this way rather than changing this process's environment."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SlimRun:
    argv: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def describe(self) -> str:
        """For assertion messages: what ran and what it said."""
        return f"slim {' '.join(self.argv)} -> exit {self.exit_code}\n{self.output}"


def slim_env(changes: Mapping[str, str | None]) -> dict[str, str]:
    """This process's environment with `changes` applied (None removes a
    variable). The sensor bundle cache stays where it is, also when a test
    gives slim another HOME."""
    env = dict(os.environ)
    env.setdefault("SLIM_CACHE_DIR", str(Path.home() / ".cache" / "slim"))
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def run_slim(
    *argv: str,
    env: Mapping[str, str | None] | None = None,
    timeout: float = 300,
    cwd: Path | None = None,
) -> SlimRun:
    """`slim ARGV...` in a new process; `env` changes its environment."""
    result = subprocess.run(
        [sys.executable, "-m", "slimmer", *argv],
        env=slim_env(env or {}),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )
    return SlimRun(tuple(argv), result.returncode, result.stdout, result.stderr)


def dockerfile_of_context(context_tar: Path) -> str:
    """The Dockerfile inside a build context written by `slim build --context-only`."""
    with tarfile.open(context_tar) as tar:
        member = tar.extractfile("Dockerfile")
        if member is None:
            raise AssertionError(f"no Dockerfile in {context_tar}")
        return io.TextIOWrapper(member, encoding="utf-8").read()
