"""The one module that talks to the Docker engine (docker SDK).

Every container, volume or image slim creates carries the label
`io.slim.run=<run id>` and is removed in a finally block, also on Ctrl-C.
"""

from __future__ import annotations

import io
import logging
import signal
import tarfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import docker
import docker.errors
from docker.models.containers import Container

from slimmer.errors import EngineError, NotFound

log = logging.getLogger(__name__)

RUN_LABEL = "io.slim.run"
ENGINE_HINT = "start it with `bash scripts/engine.sh` (or `sudo dockerd &`), or set DOCKER_HOST"


@contextmanager
def signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM while cleaning up, so a second Ctrl-C cannot
    leave a container behind; they are delivered right after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def published_host_for(base_url: str) -> str:
    """The host that publishes a container's ports, from the SDK's base URL:
    127.0.0.1 for a local socket, the engine's host for tcp:// engines."""
    url = urlsplit(base_url)
    if url.scheme in ("http", "https", "tcp") and url.hostname not in (None, "localhost"):
        return url.hostname
    return "127.0.0.1"


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass(frozen=True)
class Leftover:
    kind: str  # container | volume | image
    name: str
    run_id: str


class Engine:
    """A connected engine client."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client

    @classmethod
    def connect(cls, timeout: int = 120) -> Engine:
        """Connect with the environment's settings (DOCKER_HOST and friends)."""
        try:
            client = docker.from_env(timeout=timeout)
            client.ping()
        except docker.errors.DockerException as exc:
            raise EngineError(
                f"the Docker engine is not reachable ({_short(exc)})", ENGINE_HINT
            ) from None
        return cls(client)

    @property
    def published_host(self) -> str:
        """Where published ports are reached: loopback for a local engine
        (ports are bound to 127.0.0.1 only), the engine's host otherwise."""
        return published_host_for(str(self.client.api.base_url))

    @property
    def publish_address(self) -> str:
        """The address ports are published on: loopback unless the engine is
        remote, where loopback would be the remote host's."""
        return "127.0.0.1" if self.published_host == "127.0.0.1" else "0.0.0.0"

    def publish(self, ports: list[int]) -> dict[str, tuple[str, None]]:
        """A `ports=` option publishing TCP ports on a free host port each."""
        return {f"{port}/tcp": (self.publish_address, None) for port in ports}

    def close(self) -> None:
        self.client.close()

    def version(self) -> str:
        return str(self.client.version().get("Version", "?"))

    def image_attrs(self, image: str) -> dict[str, Any]:
        """The inspect data of a local image."""
        try:
            return self.client.images.get(image).attrs
        except docker.errors.ImageNotFound:
            raise NotFound(
                f"image {image!r} not found on the engine",
                f"build it (docker build -t {image} ...) or pull it (docker pull {image})",
            ) from None
        except docker.errors.APIError as exc:
            raise EngineError(f"inspecting {image!r} failed: {_short(exc)}") from None

    def pull(self, image: str) -> None:
        """Pull an image from its registry (the fast path where one answers)."""
        try:
            self.client.images.pull(image)
        except docker.errors.DockerException as exc:
            raise NotFound(
                f"image {image!r} is not local and could not be pulled ({_short(exc)})",
                "build it, or make the base images with `make base-images`",
            ) from None

    def image_exists(self, image: str) -> bool:
        try:
            self.client.images.get(image)
        except docker.errors.ImageNotFound:
            return False
        return True

    @contextmanager
    def container(self, image: str, run_id: str, **options: Any) -> Iterator[Container]:
        """A created (not started) container, labelled and always removed."""
        labels = {**options.pop("labels", {}), RUN_LABEL: run_id}
        container = None
        try:
            container = self.client.containers.create(image, labels=labels, **options)
            yield container
        except docker.errors.ImageNotFound:
            raise NotFound(f"image {image!r} not found on the engine") from None
        except docker.errors.APIError as exc:
            raise EngineError(f"the engine refused: {_short(exc)}") from None
        finally:
            with signals_held():
                if container is not None:
                    self.remove_container(container.id)
                else:  # interrupted while the engine was creating it
                    for leftover in self.leftovers(run_id):
                        if leftover.kind == "container":
                            self.remove_container(leftover.name)

    def run_to_exit(
        self,
        image: str,
        command: list[str] | None,
        run_id: str,
        timeout: float = 120,
        **options: Any,
    ) -> tuple[int, bytes, bytes]:
        """Run a container to its end: exit status, stdout, stderr."""
        with self.container(image, run_id, command=command, **options) as container:
            container.start()
            try:
                status = container.wait(timeout=timeout)
            except Exception as exc:  # requests' ReadTimeout and friends
                raise EngineError(
                    f"{image}: did not finish within {timeout:.0f}s ({_short(exc)})"
                ) from None
            stdout = container.logs(stdout=True, stderr=False)
            stderr = container.logs(stdout=False, stderr=True)
            return int(status.get("StatusCode", -1)), stdout, stderr

    def build(
        self,
        context: BinaryIO,
        tag: str,
        *,
        labels: dict[str, str] | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> str:
        """Build an image from a tar context (Dockerfile at its top); returns
        the image id. Build output goes to `progress` line by line."""
        image_id = None
        try:
            for message in self.client.api.build(
                fileobj=context,
                custom_context=True,
                tag=tag,
                labels=labels,
                rm=True,
                forcerm=True,
                decode=True,
            ):
                if "error" in message:
                    detail = message.get("errorDetail", {}).get("message") or message["error"]
                    raise EngineError(f"docker build failed: {detail.strip()}")
                text = message.get("stream", "").rstrip()
                if text and progress is not None:
                    progress(text)
                aux = message.get("aux") or {}
                image_id = aux.get("ID", image_id)
        except docker.errors.APIError as exc:
            raise EngineError(f"docker build failed: {_short(exc)}") from None
        if image_id is None:
            image_id = self.client.images.get(tag).id
        return str(image_id)

    def remove_image(self, image: str) -> None:
        with suppress(docker.errors.NotFound):
            self.client.images.remove(image, force=True)

    # ---- a running container

    def put_archive(self, container: Container, data: bytes | BinaryIO) -> None:
        """Unpack a tar at / of a created container (before it starts)."""
        try:
            if not container.put_archive("/", data):
                raise EngineError("the engine refused the archive")
        except docker.errors.APIError as exc:
            raise EngineError(f"copying into the container failed: {_short(exc)}") from None

    def get_file(self, container: Container, path: str, max_bytes: int) -> bytes | None:
        """One regular file out of a (possibly stopped) container, or None.

        The archive the engine returns is untrusted: only a single regular
        member with the requested name is accepted, read in memory.
        """
        try:
            stream, _ = container.get_archive(path)
        except docker.errors.NotFound:
            return None
        except docker.errors.APIError as exc:
            raise EngineError(
                f"copying {path} out of the container failed: {_short(exc)}"
            ) from None
        buffer = io.BytesIO()
        for chunk in stream:
            buffer.write(chunk)
            if buffer.tell() > max_bytes + 65536:
                raise EngineError(f"{path} in the container is larger than {max_bytes} bytes")
        buffer.seek(0)
        with tarfile.open(fileobj=buffer, mode="r:") as tar:
            members = tar.getmembers()
            if len(members) != 1 or not members[0].isreg():
                raise EngineError(f"unexpected archive for {path}")
            if members[0].name != path.rsplit("/", 1)[-1] or members[0].size > max_bytes:
                raise EngineError(f"unexpected member {members[0].name!r} for {path}")
            handle = tar.extractfile(members[0])
            return handle.read() if handle else None

    @contextmanager
    def open_file_stream(self, container: Container, path: str) -> Iterator[BinaryIO]:
        """Stream one regular file out of a (stopped) container, without
        holding it in memory. The engine's archive is untrusted: it must hold
        exactly that one regular file."""
        try:
            chunks, _ = container.get_archive(path)
        except docker.errors.NotFound:
            raise EngineError(f"{path} is not in the container") from None
        except docker.errors.APIError as exc:
            raise EngineError(
                f"copying {path} out of the container failed: {_short(exc)}"
            ) from None
        with tarfile.open(fileobj=ChunkReader(chunks), mode="r|") as outer:
            member = outer.next()
            if member is None or not member.isreg() or member.name != path.rsplit("/", 1)[-1]:
                raise EngineError(f"unexpected archive for {path}")
            handle = outer.extractfile(member)
            if handle is None:
                raise EngineError(f"unexpected archive for {path}")
            yield handle

    def stream_logs(self, container: Container) -> Iterator[bytes]:
        """stdout and stderr of the container as they come, until it ends."""
        try:
            yield from container.logs(stream=True, follow=True)
        except docker.errors.APIError:
            return

    def kill(self, container: Container, signal_number: int) -> None:
        with suppress(docker.errors.APIError):  # not running any more
            container.kill(signal=signal_number)

    def wait(self, container: Container, timeout: float) -> int | None:
        """The container's exit status, or None if it still runs after timeout."""
        try:
            return int(container.wait(timeout=timeout).get("StatusCode", -1))
        except docker.errors.APIError as exc:
            raise EngineError(f"waiting for the container failed: {_short(exc)}") from None
        except Exception:  # requests' ReadTimeout / ConnectionError on time-out
            return None

    def is_running(self, container: Container) -> bool:
        try:
            container.reload()
        except docker.errors.NotFound:
            return False
        return container.status in ("created", "running", "restarting")

    def exec_run(
        self, container: Container, argv: list[str], user: str
    ) -> tuple[int, bytes, bytes]:
        try:
            result = container.exec_run(argv, user=user, demux=True)
        except docker.errors.APIError as exc:
            raise EngineError(f"exec in the container failed: {_short(exc)}") from None
        stdout, stderr = result.output if result.output else (b"", b"")
        return (
            int(result.exit_code if result.exit_code is not None else -1),
            stdout or b"",
            stderr or b"",
        )

    @staticmethod
    def published_port(container: Container, port: str) -> tuple[str, int]:
        """The host address and port a container port was published on."""
        container.reload()
        bindings = (container.attrs["NetworkSettings"].get("Ports") or {}).get(port) or []
        if not bindings:
            raise EngineError(f"port {port} of {container.name} is not published")
        return bindings[0]["HostIp"] or "127.0.0.1", int(bindings[0]["HostPort"])

    def remove_container(self, container_id: str) -> None:
        with suppress(docker.errors.NotFound):
            self.client.api.remove_container(container_id, force=True, v=True)

    def leftovers(self, run_id: str | None = None) -> list[Leftover]:
        """Everything on the engine labelled by slim (for one run, or any)."""
        label = f"{RUN_LABEL}={run_id}" if run_id else RUN_LABEL
        found = [
            Leftover("container", c.name, c.labels.get(RUN_LABEL, ""))
            for c in self.client.containers.list(all=True, filters={"label": label})
        ]
        found += [
            Leftover("volume", v.name, (v.attrs.get("Labels") or {}).get(RUN_LABEL, ""))
            for v in self.client.volumes.list(filters={"label": label})
        ]
        found += [
            Leftover("image", (i.tags or [i.id])[0], i.labels.get(RUN_LABEL, ""))
            for i in self.client.images.list(filters={"label": label})
        ]
        return found

    def remove_leftovers(self, run_id: str | None = None) -> list[Leftover]:
        """Remove what `leftovers` finds; returns what was removed."""
        removed = self.leftovers(run_id)
        for item in removed:
            try:
                if item.kind == "container":
                    self.remove_container(item.name)
                elif item.kind == "volume":
                    self.client.volumes.get(item.name).remove(force=True)
                else:
                    self.client.images.remove(item.name, force=True)
            except docker.errors.NotFound:
                continue
        return removed


class ChunkReader(io.RawIOBase):
    """A readable file over an iterator of byte chunks (a streamed response)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._buffer:
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(target), len(self._buffer))
        target[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "explanation", None) or exc)
    return text.splitlines()[0] if text else type(exc).__name__
