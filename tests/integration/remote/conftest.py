"""A Docker engine that is remote to this machine (scripts/remote-engine.sh):
a second dockerd in its own network namespace, reached over plain TCP, TLS,
a local tunnel and ssh, plus an sshd in front of this machine's own engine.
Set up once per session and taken down at its end; in CI, or as root, a
set-up that fails is a test failure, never a skip."""

from __future__ import annotations

import os
import random
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import IN_CI, REPO

SCRIPT = REPO / "scripts" / "remote-engine.sh"
FIXTURE = "slim-fixture-healthuser:latest"
REMOTE_ONLY = "slim-remote-only:latest"  # an image only the remote engine has


@dataclass(frozen=True)
class RemoteEngine:
    instance: int
    engine_ip: str  # where its published ports are open (not this machine's 127.0.0.1)
    socket: str  # unix:// socket on this machine, for setting up
    tcp_host: str
    tls_host: str
    tls_cert_path: Path  # ca.pem, cert.pem, key.pem
    tunnel_host: str  # tcp://127.0.0.1:PORT -> tcp_host
    ssh_host: str  # ssh://root@engine_ip
    ssh_local_host: str  # ssh://root@localhost:PORT -> this machine's own engine
    ssh_home: Path  # HOME with .ssh/ (key, known_hosts, config) for both sshds

    def docker(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The docker CLI on this engine (through its unix socket)."""
        return subprocess.run(
            ["docker", "-H", self.socket, *args], capture_output=True, text=True, check=True
        )


def free_instance() -> int:
    """An instance number no other session's remote engine uses (the names
    and addresses of scripts/remote-engine.sh are derived from it)."""
    numbers = list(range(2, 251))
    random.Random(os.getpid()).shuffle(numbers)
    for number in numbers:
        if (
            not Path(f"/sys/class/net/slimh{number}").exists()
            and not Path(f"/run/slim-remote-{number}").exists()
        ):
            return number
    raise RuntimeError("no free remote-engine instance number")


def setup_failed(message: str) -> None:
    if IN_CI or os.geteuid() == 0:
        pytest.fail(message, pytrace=False)
    pytest.skip(f"{message} (the remote engines need root)")


@pytest.fixture(scope="session")
def remote_engine() -> Iterator[RemoteEngine]:
    instance = free_instance()
    up = subprocess.run(
        ["bash", str(SCRIPT), "up", str(instance)], capture_output=True, text=True, timeout=900
    )
    if up.returncode != 0:
        setup_failed(f"scripts/remote-engine.sh up {instance} failed:\n{up.stderr[-4000:]}")
    facts = dict(line.split("=", 1) for line in up.stdout.splitlines() if "=" in line)
    try:
        remote = RemoteEngine(
            instance=instance,
            engine_ip=facts["ENGINE_IP"],
            socket=facts["SOCKET"],
            tcp_host=facts["TCP_HOST"],
            tls_host=facts["TLS_HOST"],
            tls_cert_path=Path(facts["TLS_CERT_PATH"]),
            tunnel_host=facts["TUNNEL_HOST"],
            ssh_host=facts["SSH_HOST"],
            ssh_local_host=facts["SSH_LOCAL_HOST"],
            ssh_home=Path(facts["SSH_HOME"]),
        )
        remote.docker("build", "-q", "-t", FIXTURE, str(REPO / "fixtures" / "healthuser"))
        remote.docker("tag", "busybox:latest", REMOTE_ONLY)
        yield remote
    finally:
        down = subprocess.run(
            ["bash", str(SCRIPT), "down", str(instance)], capture_output=True, text=True
        )
        if down.returncode != 0:
            pytest.fail(f"scripts/remote-engine.sh down {instance} failed:\n{down.stderr}")


@pytest.fixture(autouse=True)
def _remote_engine_left_clean(remote_engine: RemoteEngine) -> Iterator[None]:
    """No container slim made may remain on the remote engine after a test."""
    yield
    left = remote_engine.docker(
        "ps", "-a", "--filter", "label=io.slim.run", "--format", "{{.Names}}"
    ).stdout.split()
    if left:
        remote_engine.docker("rm", "-f", *left)
        pytest.fail(f"left on the remote engine: {left}", pytrace=False)
