"""The one module that talks to the Docker engine (docker SDK).

Every container, volume or image slim creates carries the label
`io.slim.run=<run id>` and is removed in a finally block, also on Ctrl-C.
"""

from __future__ import annotations

import io
import logging
import re
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
import requests

from slimmer.cleanup import signals_held
from slimmer.errors import EngineError, NotFound, UsageError

log = logging.getLogger(__name__)

RUN_LABEL = "io.slim.run"
ENGINE_HINT = "start it with `bash scripts/engine.sh` (or `sudo dockerd &`), or set DOCKER_HOST"


def published_host_for(base_url: str) -> str:
    """The host that publishes a container's ports, from the SDK's base URL:
    127.0.0.1 for a local socket, the engine's host for tcp:// engines."""
    url = urlsplit(base_url)
    if url.scheme in ("http", "https", "tcp") and url.hostname not in (None, "localhost"):
        return url.hostname
    return "127.0.0.1"


RUN_ID_PREFIX = re.compile(r"[a-z0-9-]{0,32}")


ANSWER_TIMEOUT = 10.0  # how long a connected engine may take to answer a ping


def _engine_address() -> str:
    try:
        return str(docker.utils.kwargs_from_env().get("base_url") or "the default socket")
    except docker.errors.DockerException:
        return "DOCKER_HOST"


def _timed_out(exc: BaseException) -> bool:
    """Whether an error of the SDK comes from a time-out (the engine is
    there but silent) rather than a refused or missing connection."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (TimeoutError, requests.exceptions.Timeout)):
            return True
        if "timed out" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _root_cause(exc: BaseException) -> str:
    """The innermost system error under an SDK error ("Connection refused"),
    else its first line."""
    found: BaseException = exc
    seen: BaseException | None = exc
    while seen is not None:
        found = seen
        for arg in getattr(seen, "args", ()):
            if isinstance(arg, OSError) and arg.strerror:
                return arg.strerror
            if isinstance(arg, BaseException):
                nested = _root_cause(arg)
                if nested:
                    return nested
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    return _short(found)


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
class ExecResult:
    exit_code: int | None  # None: still running when the time was up
    stdout: bytes
    stderr: bytes
    timed_out: bool


@dataclass(frozen=True)
class Leftover:
    kind: str  # container | volume | image
    name: str
    run_id: str


class Engine:
    """A connected engine client; a context manager that closes it.

    with Engine.connect() as engine:
        ...
    """

    def __init__(self, client: docker.DockerClient, run_prefix: str = "") -> None:
        self.client = client
        self.run_prefix = run_prefix

    def new_run_id(self) -> str:
        """The label value of a new run's containers (see RUN_LABEL)."""
        return new_run_id(self.run_prefix)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @classmethod
    def connect(
        cls, timeout: int = 120, run_prefix: str = "", answer_timeout: float = ANSWER_TIMEOUT
    ) -> Engine:
        """Connect with the environment's settings (DOCKER_HOST and friends).
        An engine that does not answer within `answer_timeout` seconds is an
        error that says so; one that is not there fails at once. Every run
        id this engine hands out starts with `run_prefix`."""
        if not RUN_ID_PREFIX.fullmatch(run_prefix):
            raise UsageError(f"bad run prefix {run_prefix!r}", "use up to 32 of a-z, 0-9 and -")
        try:
            client = docker.from_env(timeout=answer_timeout)  # asks the API version too
            client.ping()
        except docker.errors.DockerException as exc:
            where = _engine_address()
            if _timed_out(exc):
                raise EngineError(
                    f"the Docker engine at {where} did not answer within {answer_timeout:.0f}s",
                    "is it overloaded or hung? check its log, or restart it",
                ) from None
            raise EngineError(
                f"the Docker engine at {where} is not reachable ({_root_cause(exc)})", ENGINE_HINT
            ) from None
        client.api.timeout = timeout  # long operations (builds, archives) get longer
        return cls(client, run_prefix)

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
    def container(
        self,
        image: str,
        run_id: str,
        *,
        command: list[str] | None = None,
        entrypoint: list[str] | None = None,
        user: str | None = None,
        working_dir: str | None = None,
        ports: list[int] | tuple[int, ...] = (),
        environment: dict[str, str] | None = None,
        network_of: ContainerRef | None = None,
    ) -> Iterator[ContainerRef]:
        """A created (not started) container, labelled and always removed.
        `ports` are published on a free host port each (see `publish`);
        `environment` adds to (and overrides) the image's ENV; `network_of`
        shares another container's network (its 127.0.0.1 is this one's)."""
        options: dict[str, Any] = {"command": command, "labels": {RUN_LABEL: run_id}}
        if environment:
            options["environment"] = environment
        if entrypoint is not None:
            options["entrypoint"] = entrypoint
        if user is not None:
            options["user"] = user
        if working_dir:
            options["working_dir"] = working_dir
        if ports:
            options["ports"] = self.publish(list(ports))
        if network_of is not None:
            options["network_mode"] = f"container:{network_of.id}"
        created = None
        try:
            created = self.client.containers.create(image, detach=True, **options)
            yield ContainerRef(created.id, created.name)
        except docker.errors.ImageNotFound:
            raise NotFound(f"image {image!r} not found on the engine") from None
        except docker.errors.APIError as exc:
            raise EngineError(f"the engine refused: {_short(exc)}") from None
        finally:
            with signals_held():
                if created is not None:
                    self.remove_container(created.id)
                else:  # interrupted while the engine was creating it
                    for leftover in self.leftovers(run_id):
                        if leftover.kind == "container":
                            self.remove_container(leftover.name)

    def _container(self, ref: ContainerRef) -> Any:
        try:
            return self.client.containers.get(ref.id)
        except docker.errors.NotFound:
            raise EngineError(f"container {ref.name} is gone") from None
        except docker.errors.APIError as exc:
            raise EngineError(f"inspecting container {ref.name} failed: {_short(exc)}") from None

    def start(self, ref: ContainerRef) -> None:
        try:
            self.client.api.start(ref.id)
        except docker.errors.APIError as exc:
            raise EngineError(f"the engine could not start the container: {_short(exc)}") from None

    def run_to_exit(
        self,
        image: str,
        command: list[str] | None,
        run_id: str,
        timeout: float = 120,
        *,
        entrypoint: list[str] | None = None,
        user: str | None = None,
        network_of: ContainerRef | None = None,
    ) -> tuple[int, bytes, bytes]:
        """Run a container to its end: exit status, stdout, stderr."""
        with self.container(
            image, run_id, command=command, entrypoint=entrypoint, user=user, network_of=network_of
        ) as ref:
            self.start(ref)
            status = self.wait(ref, timeout)
            if status is None:
                raise EngineError(f"{image}: did not finish within {timeout:.0f}s")
            stdout = self.client.api.logs(ref.id, stdout=True, stderr=False)
            stderr = self.client.api.logs(ref.id, stdout=False, stderr=True)
            return status, stdout, stderr

    def build(
        self,
        context: BinaryIO,
        tag: str,
        *,
        labels: dict[str, str] | None = None,
        build_args: dict[str, str] | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> str:
        """Build an image from a tar context (Dockerfile at its top); returns
        the image id. `labels` and `build_args` reach the builder as data,
        never parsed as Dockerfile text. Build output goes to `progress`
        line by line."""
        image_id = None
        try:
            for message in self.client.api.build(
                fileobj=context,
                custom_context=True,
                tag=tag,
                labels=labels,
                buildargs=build_args,
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

    def put_archive(self, ref: ContainerRef, data: bytes | BinaryIO, path: str = "/") -> None:
        """Unpack a tar in a directory (default /) of a created container."""
        try:
            if not self.client.api.put_archive(ref.id, path, data):
                raise EngineError("the engine refused the archive")
        except docker.errors.APIError as exc:
            raise EngineError(f"copying into the container failed: {_short(exc)}") from None

    def get_file(self, ref: ContainerRef, path: str, max_bytes: int) -> bytes | None:
        """One regular file out of a (possibly stopped) container, or None.

        The archive the engine returns is untrusted: only a single regular
        member with the requested name is accepted, read in memory.
        """
        try:
            stream, _ = self.client.api.get_archive(ref.id, path)
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
            if members[0].name != basename(path) or members[0].size > max_bytes:
                raise EngineError(f"unexpected member {members[0].name!r} for {path}")
            handle = tar.extractfile(members[0])
            return handle.read() if handle else None

    @contextmanager
    def open_file_stream(self, ref: ContainerRef, path: str) -> Iterator[BinaryIO]:
        """Stream one regular file out of a (stopped) container, without
        holding it in memory. The engine's archive is untrusted: it must hold
        exactly that one regular file.

        The HTTP response is closed on the way out, also on Ctrl-C: while
        it is open the engine keeps the container busy, and removing it
        would wait for the whole archive."""
        api = self.client.api
        try:
            # docker-py's get_archive gives no handle on the response to close.
            response = api._get(
                api._url("/containers/{0}/archive", ref.id),
                params={"path": path},
                stream=True,
                headers={"Accept-Encoding": "identity"},
            )
            api._raise_for_status(response)
        except docker.errors.NotFound:
            raise EngineError(f"{path} is not in the container") from None
        except docker.errors.APIError as exc:
            raise EngineError(
                f"copying {path} out of the container failed: {_short(exc)}"
            ) from None
        try:
            chunks = response.iter_content(chunk_size=1 << 20, decode_unicode=False)
            with tarfile.open(fileobj=ChunkReader(chunks), mode="r|") as outer:
                member = outer.next()
                if member is None or not member.isreg() or member.name != basename(path):
                    raise EngineError(f"unexpected archive for {path}")
                handle = outer.extractfile(member)
                if handle is None:
                    raise EngineError(f"unexpected archive for {path}")
                yield handle
        finally:
            response.close()

    def archive(self, ref: ContainerRef, path: str) -> bytes:
        """The engine's tar of a path in a container (for small trees)."""
        try:
            stream, _ = self.client.api.get_archive(ref.id, path)
            return b"".join(stream)
        except docker.errors.APIError as exc:
            raise EngineError(f"copying {path} out of {ref.name} failed: {_short(exc)}") from None

    def logs(self, ref: ContainerRef) -> bytes:
        """Everything the container wrote so far, stdout and stderr."""
        try:
            return bytes(self.client.api.logs(ref.id, stdout=True, stderr=True))
        except docker.errors.APIError as exc:
            raise EngineError(f"reading the logs of {ref.name} failed: {_short(exc)}") from None

    def stream_logs(self, ref: ContainerRef) -> Iterator[bytes]:
        """stdout and stderr of the container as they come, until it ends."""
        try:
            yield from self.client.api.logs(ref.id, stream=True, follow=True)
        except docker.errors.APIError:
            return

    def kill(self, ref: ContainerRef, signal_number: int) -> None:
        with suppress(docker.errors.APIError):  # not running any more
            self.client.api.kill(ref.id, signal=signal_number)

    def wait(self, ref: ContainerRef, timeout: float) -> int | None:
        """The container's exit status, or None if it still runs after timeout."""
        try:
            return int(self.client.api.wait(ref.id, timeout=timeout).get("StatusCode", -1))
        except docker.errors.APIError as exc:
            raise EngineError(f"waiting for the container failed: {_short(exc)}") from None
        except Exception:  # requests' ReadTimeout / ConnectionError on time-out
            return None

    def is_running(self, ref: ContainerRef) -> bool:
        try:
            state = self.client.api.inspect_container(ref.id).get("State") or {}
        except docker.errors.NotFound:
            return False
        return str(state.get("Status")) in ("created", "running", "restarting")

    def exec_run(self, ref: ContainerRef, argv: list[str], user: str, timeout: float) -> ExecResult:
        """Run a command in a running container, waiting at most `timeout`
        seconds. A command still running then is left to the container's
        end (the engine cannot kill one exec) and reported as timed out."""
        container = self._container(ref)
        outcome: list[ExecResult | BaseException] = []

        def run() -> None:
            try:
                result = container.exec_run(argv, user=user, demux=True)
            except BaseException as exc:  # handed to the waiting thread
                outcome.append(exc)
                return
            stdout, stderr = result.output if result.output else (b"", b"")
            code = int(result.exit_code) if result.exit_code is not None else -1
            outcome.append(ExecResult(code, stdout or b"", stderr or b"", False))

        worker = threading.Thread(target=run, name="exec", daemon=True)
        worker.start()
        worker.join(timeout)
        if not outcome:
            return ExecResult(None, b"", b"", True)
        result = outcome[0]
        if isinstance(result, docker.errors.APIError):
            raise EngineError(f"exec in the container failed: {_short(result)}") from None
        if isinstance(result, BaseException):
            raise result
        return result

    def published_port(self, ref: ContainerRef, port: int) -> int:
        """The host port a container's TCP port was published on."""
        try:
            attrs = self.client.api.inspect_container(ref.id)
        except docker.errors.APIError as exc:
            raise EngineError(f"inspecting the container failed: {_short(exc)}") from None
        bindings = ((attrs.get("NetworkSettings") or {}).get("Ports") or {}).get(f"{port}/tcp")
        if not bindings:
            raise EngineError(f"port {port} of {ref.name} is not published")
        return int(bindings[0]["HostPort"])

    def remove_container(self, container_id: str) -> None:
        """Remove a container and its anonymous volumes; one that is gone,
        or that the engine is already removing, is not an error."""
        try:
            self.client.api.remove_container(container_id, force=True, v=True)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if exc.status_code == 409 and "already in progress" in str(exc.explanation):
                return
            raise EngineError(
                f"removing container {container_id[:12]} failed: {_short(exc)}"
            ) from None

    def leftovers(self, run_id: str | None = None, *, prefix: str | None = None) -> list[Leftover]:
        """Everything on the engine labelled by slim: of one run, of the runs
        whose id starts with a prefix, or (neither given) of any run. Read
        from the engine's lists alone, so what another run removes meanwhile
        does not make this fail."""
        label = f"{RUN_LABEL}={run_id}" if run_id else RUN_LABEL
        found = [
            Leftover(
                "container", c["Names"][0].lstrip("/"), (c.get("Labels") or {}).get(RUN_LABEL, "")
            )
            for c in self.client.api.containers(all=True, filters={"label": label})
        ]
        volumes = self.client.api.volumes(filters={"label": label}).get("Volumes") or []
        found += [
            Leftover("volume", v["Name"], (v.get("Labels") or {}).get(RUN_LABEL, ""))
            for v in volumes
        ]
        found += [
            Leftover(
                "image",
                (i.get("RepoTags") or [i["Id"]])[0],
                (i.get("Labels") or {}).get(RUN_LABEL, ""),
            )
            for i in self.client.api.images(filters={"label": label})
        ]
        if prefix is not None:
            found = [item for item in found if item.run_id.startswith(prefix)]
        return found

    def remove_leftovers(
        self, run_id: str | None = None, *, prefix: str | None = None
    ) -> list[Leftover]:
        """Remove what `leftovers` finds; returns what was removed."""
        removed = self.leftovers(run_id, prefix=prefix)
        for item in removed:
            try:
                if item.kind == "container":
                    self.remove_container(item.name)
                elif item.kind == "volume":
                    self.client.api.remove_volume(item.name, force=True)
                else:
                    self.client.api.remove_image(item.name, force=True)
            except docker.errors.NotFound:
                continue
        return removed


def basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]


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
