"""The trace: what the app touched in the fat image, the image's contract,
and the probes with the fat image's answers. Versioned JSON (slim.trace/1)."""

from __future__ import annotations

import json
import signal
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from slimmer import __version__
from slimmer.errors import SlimError

TRACE_SCHEMA = "slim.trace/1"


class TraceError(SlimError):
    """A trace file that cannot be used."""


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an image's config that the micro image must keep."""

    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: list[str] = field(default_factory=list)  # "NAME=VALUE", in image order
    workdir: str = ""
    user: str = ""
    exposed_ports: list[str] = field(default_factory=list)  # "80/tcp"
    labels: dict[str, str] = field(default_factory=dict)
    stop_signal: str | None = None
    healthcheck: dict[str, Any] | None = None
    volumes: list[str] = field(default_factory=list)
    shell: list[str] | None = None

    @classmethod
    def from_inspect(cls, attrs: dict[str, Any]) -> ImageConfig:
        config = attrs.get("Config") or {}
        return cls(
            entrypoint=config.get("Entrypoint"),
            cmd=config.get("Cmd"),
            env=list(config.get("Env") or []),
            workdir=config.get("WorkingDir") or "",
            user=config.get("User") or "",
            exposed_ports=sorted((config.get("ExposedPorts") or {}).keys()),
            labels=dict(config.get("Labels") or {}),
            stop_signal=config.get("StopSignal"),
            healthcheck=config.get("Healthcheck"),
            volumes=sorted((config.get("Volumes") or {}).keys()),
            shell=config.get("Shell"),
        )

    def env_dict(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for item in self.env:
            name, _, value = item.partition("=")
            env[name] = value
        return env

    def tcp_ports(self) -> list[int]:
        ports = []
        for spec in self.exposed_ports:
            number, _, proto = spec.partition("/")
            if (proto or "tcp") == "tcp" and number.isdigit():
                ports.append(int(number))
        return ports

    def stop_signal_number(self) -> int:
        return parse_signal(self.stop_signal or "SIGTERM")

    def healthcheck_argv(self) -> list[str] | None:
        """What the engine runs for HEALTHCHECK: CMD as is, CMD-SHELL through
        the image's SHELL (default /bin/sh -c); None without a check."""
        test = list((self.healthcheck or {}).get("Test") or [])
        if len(test) < 2 or test[0] not in ("CMD", "CMD-SHELL"):
            return None
        if test[0] == "CMD-SHELL":
            return [*(self.shell or ["/bin/sh", "-c"]), " ".join(test[1:])]
        return test[1:]


def parse_signal(spec: str) -> int:
    """'SIGQUIT', 'QUIT' or '3' -> 3."""
    text = spec.strip().upper()
    if text.isdigit():
        return int(text)
    name = text if text.startswith("SIG") else f"SIG{text}"
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise TraceError(f"unknown stop signal {spec!r}") from None


def command_line(
    config: ImageConfig, cmd: list[str] | None, entrypoint: list[str] | None
) -> list[str]:
    """What Docker would run: ENTRYPOINT + CMD, where a given command replaces
    CMD and a given entrypoint replaces both (as `docker run` does)."""
    if entrypoint is not None:
        return [*entrypoint, *(cmd or [])]
    return [*(config.entrypoint or []), *(cmd if cmd else config.cmd or [])]


@dataclass(frozen=True)
class TracedFile:
    path: str
    kind: str  # file | dir | symlink | other | gone (at the end of the run)
    access: tuple[str, ...]  # opened read executed listed written created deleted

    @property
    def created(self) -> bool:
        return "created" in self.access


@dataclass(frozen=True)
class ProbeResult:
    """One probe and the answer it got; verify replays it."""

    kind: str  # http | exec | host
    spec: dict[str, Any]
    answer: dict[str, Any]
    ok: bool


@dataclass(frozen=True)
class Trace:
    image: str
    image_id: str
    config: ImageConfig
    command: list[str]
    user: str
    files: tuple[TracedFile, ...]
    probes: tuple[ProbeResult, ...] = ()
    exit_status: int | None = None
    exit_signal: int | None = None
    complete: bool = True
    until_exit: bool = False  # a batch job: verify compares its output
    watches: int = 0
    events: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    slim_version: str = __version__
    schema: str = TRACE_SCHEMA

    def to_json(self) -> str:
        data = asdict(self)
        data["files"] = [
            {"path": f.path, "kind": f.kind, "access": list(f.access)} for f in self.files
        ]
        return json.dumps(data, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Trace:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TraceError(f"not a trace file: {exc}") from None
        if not isinstance(data, dict) or data.get("schema") != TRACE_SCHEMA:
            found = data.get("schema") if isinstance(data, dict) else type(data).__name__
            raise TraceError(
                f"not a {TRACE_SCHEMA} trace (schema: {found!r})", "make a new one with slim trace"
            )
        try:
            data["config"] = ImageConfig(**data["config"])
            data["files"] = tuple(
                TracedFile(f["path"], f["kind"], tuple(f["access"])) for f in data["files"]
            )
            data["probes"] = tuple(ProbeResult(**p) for p in data.get("probes", ()))
            return cls(**data)
        except (KeyError, TypeError) as exc:
            raise TraceError(f"malformed trace: {exc}") from None

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json(), encoding="ascii")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Trace:
        try:
            return cls.from_json(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise TraceError(f"cannot read trace {path}: {exc.strerror}") from None


def default_trace_path(image: str) -> Path:
    """.slim/<image>.trace.json, with the image name made file-safe."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in image)
    return Path(".slim") / f"{safe}.trace.json"
