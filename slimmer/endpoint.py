"""Which engine slim talks to, chosen the way the docker CLI chooses it.

    -H/--host URL          that engine (with DOCKER_TLS_VERIFY / DOCKER_CERT_PATH)
    --context NAME         that docker context
    DOCKER_HOST            that engine (DOCKER_CONTEXT and currentContext are not read)
    DOCKER_CONTEXT         that context
    currentContext         the context `docker context use` chose (in config.json)
    otherwise              the local socket

A context lives in the docker CLI's configuration directory ($DOCKER_CONFIG,
else ~/.docker): contexts/meta/<sha256 of its name>/meta.json holds its
endpoint, contexts/tls/<sha256>/docker/ its certificates. The store is read
here directly, also when config.json does not exist (as after `docker
context create`); a context that is not there is an error, never a silent
fall-back to the local socket. Pure: the environment is an argument.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from slimmer.errors import UsageError

DEFAULT_CONTEXT = "default"
MAX_CONFIG_BYTES = 1 << 20


class EndpointError(UsageError):
    """An engine that cannot be chosen: an unknown context, conflicting options."""


@dataclass(frozen=True)
class TlsFiles:
    """The certificates of a TLS engine; verify: check the engine's
    certificate against `ca` (the engine's certificates win over any CA
    bundle of the environment)."""

    ca: str | None
    cert: str | None
    key: str | None
    verify: bool


@dataclass(frozen=True)
class EngineEndpoint:
    """Where the engine is: a URL (None: the local socket), its TLS files,
    and what chose it (for messages: "-H", "DOCKER_HOST", "context NAME")."""

    host: str | None
    tls: TlsFiles | None
    chosen_by: str

    def describe(self) -> str:
        where = self.host or "the local socket"
        return (
            where if self.chosen_by in ("-H", "DOCKER_HOST", "") else f"{where} ({self.chosen_by})"
        )


def config_dir(env: Mapping[str, str]) -> Path:
    """The docker CLI's configuration directory: $DOCKER_CONFIG, else ~/.docker."""
    if env.get("DOCKER_CONFIG"):
        return Path(env["DOCKER_CONFIG"])
    home = env.get("HOME") or os.path.expanduser("~")
    return Path(home) / ".docker"


def context_id(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def env_tls(env: Mapping[str, str]) -> TlsFiles | None:
    """TLS from DOCKER_TLS_VERIFY / DOCKER_CERT_PATH, read as the docker CLI
    and SDK read them: any non-empty DOCKER_TLS_VERIFY verifies; a
    DOCKER_CERT_PATH alone gives TLS without verification; the files are
    ca.pem, cert.pem and key.pem (in ~/.docker without a DOCKER_CERT_PATH)."""
    verify = bool(env.get("DOCKER_TLS_VERIFY"))
    cert_path = env.get("DOCKER_CERT_PATH") or None
    if not (verify or cert_path):
        return None
    directory = Path(cert_path) if cert_path else config_dir(env)
    return TlsFiles(
        ca=str(directory / "ca.pem"),
        cert=str(directory / "cert.pem"),
        key=str(directory / "key.pem"),
        verify=verify,
    )


def _read_json(path: Path, what: str) -> dict[str, object]:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise EndpointError(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        parsed = json.loads(data) if len(data) <= MAX_CONFIG_BYTES else None
    except ValueError as exc:
        raise EndpointError(f"{what} {path} is not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise EndpointError(f"{what} {path} is not a JSON object")
    return parsed


def current_context(env: Mapping[str, str]) -> str | None:
    """The currentContext of config.json, if the file exists and names one."""
    path = config_dir(env) / "config.json"
    if not path.is_file():
        return None
    name = _read_json(path, "the docker configuration").get("currentContext")
    return name if isinstance(name, str) and name else None


def context_endpoint(name: str, env: Mapping[str, str], chosen_by: str) -> EngineEndpoint:
    """The endpoint of a docker context, read from the CLI's context store."""
    if name == DEFAULT_CONTEXT:
        return EngineEndpoint(env.get("DOCKER_HOST") or None, env_tls(env), chosen_by)
    store = config_dir(env) / "contexts"
    meta_path = store / "meta" / context_id(name) / "meta.json"
    if not meta_path.is_file():
        raise EndpointError(
            f"context {name!r} ({chosen_by}) not found in {store}",
            "`docker context ls` lists the contexts; `docker context create` makes one",
        )
    meta = _read_json(meta_path, f"context {name!r}")
    endpoints = meta.get("Endpoints")
    docker = endpoints.get("docker") if isinstance(endpoints, dict) else None
    if not isinstance(docker, dict):
        raise EndpointError(f"context {name!r} has no docker endpoint ({meta_path})")
    host = docker.get("Host")
    if host is not None and not isinstance(host, str):
        raise EndpointError(f"context {name!r}: its Host is not a string ({meta_path})")
    skip_verify = bool(docker.get("SkipTLSVerify", False))
    tls_dir = store / "tls" / context_id(name) / "docker"
    files = {part: tls_dir / f"{part}.pem" for part in ("ca", "cert", "key")}
    tls = None
    if any(path.is_file() for path in files.values()):
        tls = TlsFiles(
            **{part: str(path) if path.is_file() else None for part, path in files.items()},
            verify=not skip_verify,
        )
    return EngineEndpoint(host or None, tls, chosen_by)


def choose_endpoint(
    host: str | None, context: str | None, env: Mapping[str, str]
) -> EngineEndpoint:
    """The engine of this run, with the docker CLI's precedence (module doc)."""
    if host and context:
        raise EndpointError(
            "conflicting options: -H/--host and --context", "give one of them, as with docker"
        )
    if host:
        return EngineEndpoint(host, env_tls(env), "-H")
    if context:
        return context_endpoint(context, env, "--context")
    if env.get("DOCKER_HOST"):
        return EngineEndpoint(env["DOCKER_HOST"], env_tls(env), "DOCKER_HOST")
    if env.get("DOCKER_CONTEXT"):
        return context_endpoint(env["DOCKER_CONTEXT"], env, "DOCKER_CONTEXT")
    current = current_context(env)
    if current:
        return context_endpoint(current, env, f"currentContext of {config_dir(env)}/config.json")
    return EngineEndpoint(None, env_tls(env), "")
