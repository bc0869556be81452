"""What slim knows of engines without talking to one, and the values the
engine seam (slimmer/engine.py, the one module that imports docker) hands
out: where a local or remote engine's published ports are reached, what an
OCI runtime's refusal to start a container means, the SHELL an image's
history records, image references, run ids, and the plain types
(ContainerRef, VolumeMount, VolumeInfo, ExecResult, HealthState, Leftover)
that stand for docker's
own, which never leave the seam. Pure: no engine, no docker import."""

from __future__ import annotations

import io
import ipaddress
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from slimmer.errors import CommandNotRunnable, EngineError, RuntimeRefused

SSH_BASE_URL = "http+docker://ssh"
LOOPBACK = "127.0.0.1"
ALL_INTERFACES = "0.0.0.0"
SSH_BASE_URL = "http+docker://ssh"


class EngineKind(StrEnum):
    DOCKER = "docker"
    PODMAN = "podman"


def engine_kind_of(version: dict[str, Any]) -> EngineKind:
    """Podman's compat API names itself among the version's components."""
    names = {str(part.get("Name", "")) for part in version.get("Components") or ()}
    return EngineKind.PODMAN if "Podman Engine" in names else EngineKind.DOCKER


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def published_host_for(base_url: str, ssh_hostname: str | None = None) -> str:
    """The host where a container's published ports are reached, from the
    SDK's base URL: 127.0.0.1 for a local socket or a loopback address, the
    engine's host for tcp:// engines, the ssh host (after ~/.ssh/config's
    HostName) for ssh:// engines."""
    url = urlsplit(base_url)
    if base_url.rstrip("/") == SSH_BASE_URL and ssh_hostname:
        host: str | None = ssh_hostname
    elif url.scheme in ("http", "https", "tcp"):
        host = url.hostname
    else:
        host = None
    if host is None or is_loopback(host):
        return LOOPBACK
    return host


RUN_ID_PREFIX = re.compile(r"[a-z0-9-]{0,32}")
UNREPORTED_EFFECT = (
    "the micro image gets none (a HEALTHCHECK CMD-SHELL and RUN in images built on it use "
    "/bin/sh -c); the trace and the report say so"
)
_HISTORY_SHELL = re.compile(r"(?:^|#\(nop\)\s+)SHELL\s+(\[.*\])\s*$", re.DOTALL)


def shell_from_history(history: list[dict[str, Any]]) -> tuple[tuple[str, ...] | None, bool]:
    """The image's SHELL as its history records it (newest entry first), for
    engines whose inspect leaves it out: (shell, known). Podman and buildah
    record `SHELL ["/bin/ash", "-c"]` as JSON; Docker's builders write
    `SHELL [/bin/ash -c]`, whose words cannot be told apart: unknown. No
    SHELL entry in a history that records every step: the default (None)."""
    if not history:
        return None, False
    for entry in history:
        created_by = str(entry.get("CreatedBy") or "")
        found = _HISTORY_SHELL.search(created_by.strip())
        if not found:
            continue
        try:
            words = json.loads(found.group(1))
        except ValueError:
            return None, False
        if isinstance(words, list) and words and all(isinstance(w, str) for w in words):
            return tuple(words), True
        return None, False
    return None, True


# How the OCI runtime says it could not run the container's command (runc
# through Docker and Podman, crun), and that an error is the runtime's at all.
_COMMAND_FAILURE = re.compile(
    r"unable to start container process: exec:|executable file .* not found|open executable"
    r"|OCI runtime attempted to invoke a command that was not found|exec format error",
    re.IGNORECASE,
)
_RUNTIME_FAILURE = re.compile(
    r"OCI runtime|OCI permission denied|failed to create shim task|\b(runc|crun|runsc|youki)\b",
    re.IGNORECASE,
)
_RUNTIME_HINTS = (
    (
        "rlimit",
        "the engine asks for a resource limit (ulimit) the host does not let its runtime set: "
        "lower the engine's default ulimits (dockerd --default-ulimit, Podman: default_ulimits "
        "in containers.conf) or raise the host's (fs.nr_open, the service's hard limits)",
    ),
    (
        "cgroup",
        "the runtime cannot set up the container's cgroup: check the host's cgroup mounts "
        "(scripts/cgroups.sh) and the engine's cgroup driver",
    ),
    ("exec format error", "the command is built for another CPU than the engine's"),
)


def start_error(explanation: str) -> EngineError | CommandNotRunnable | RuntimeRefused:
    """The error for an engine's refusal to start a container, by what the
    explanation says: the image's command cannot run, the OCI runtime
    refused (a limit or policy of the host), or the engine refused."""
    hint = next((h for word, h in _RUNTIME_HINTS if word in explanation.lower()), None)
    if _COMMAND_FAILURE.search(explanation):
        reason = explanation.split("unable to start container process: ", 1)[-1]
        return CommandNotRunnable(f"the container's command cannot run: {reason}", hint)
    if _RUNTIME_FAILURE.search(explanation):
        return RuntimeRefused(
            f"the container runtime refused to start the container: {explanation}",
            hint
            or "a limit or security policy of the engine's host refused what the "
            "runtime was asked for (the reason is above)",
        )
    return EngineError(f"the engine could not start the container: {explanation}")


def new_run_id(prefix: str = "") -> str:
    """A run id: the prefix (which names a group of runs, e.g. one CI job),
    then 12 random hex digits."""
    return prefix + uuid.uuid4().hex[:12]


@dataclass(frozen=True)
class ContainerRef:
    """A container slim created: its id and name. docker's own types never
    leave this module."""

    id: str
    name: str


@dataclass(frozen=True)
class VolumeMount:
    """A named volume mounted into a container."""

    name: str
    path: str
    read_only: bool = True


@dataclass(frozen=True)
class VolumeInfo:
    """What the engine says of a volume."""

    name: str
    created: str  # CreatedAt, as the engine gives it
    labels: dict[str, str]


@dataclass(frozen=True)
class ExecResult:
    exit_code: int | None  # None: still running when the time was up
    stdout: bytes
    stderr: bytes
    timed_out: bool


@dataclass(frozen=True)
class HealthState:
    """What the engine says of a container's health: `status` is starting,
    healthy or unhealthy ("" when it has no HEALTHCHECK), with the last
    check's exit code and output."""

    status: str
    failing_streak: int = 0
    last_exit: int | None = None
    last_output: str = ""


@dataclass(frozen=True)
class Leftover:
    kind: str  # container | volume | image
    name: str
    run_id: str
    owner: str = ""  # io.slim.owner of a container (slimmer.owner)


def volume_info(attrs: dict[str, Any]) -> VolumeInfo:
    return VolumeInfo(
        name=str(attrs.get("Name", "")),
        created=str(attrs.get("CreatedAt") or ""),
        labels={str(k): str(v) for k, v in (attrs.get("Labels") or {}).items()},
    )


def split_reference(reference: str) -> tuple[str, str | None]:
    """'registry:5000/app:1.2' -> ('registry:5000/app', '1.2'); a colon in
    the host part is not a tag."""
    repository, sep, tag = reference.rpartition(":")
    if sep and "/" not in tag:
        return repository, tag
    return reference, None


def basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]


class ChunkReader(io.RawIOBase):
    """A readable file over an iterator of byte chunks (a streamed response)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buffer = memoryview(b"")  # what is left of the current chunk

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._buffer:
            try:
                self._buffer = memoryview(next(self._chunks))
            except StopIteration:
                return 0
        size = min(len(target), len(self._buffer))
        target[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]  # a view: no copy of the rest
        return size
