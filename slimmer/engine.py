"""The one module that talks to the Docker engine (docker SDK).

Every container, volume or image slim creates carries the label
`io.slim.run=<run id>` and is removed in a finally block, also on Ctrl-C.
"""

from __future__ import annotations

import io
import logging
import tarfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import replace
from typing import Any, BinaryIO

import requests

from slimmer.cleanup import signals_held
from slimmer.deferred import deferred
from slimmer.endpoint import EngineEndpoint, TlsFiles, choose_endpoint
from slimmer.engineinfo import (
    ALL_INTERFACES,
    LOOPBACK,
    RUN_ID_PREFIX,
    UNREPORTED_EFFECT,
    ChunkReader,
    ContainerRef,
    EngineKind,
    ExecResult,
    HealthState,
    Leftover,
    VolumeInfo,
    VolumeMount,
    basename,
    engine_kind_of,
    is_loopback,
    new_run_id,
    published_host_for,
    shell_from_history,
    split_reference,
    start_error,
    volume_info,
)
from slimmer.errors import (
    EngineError,
    NotFound,
    UsageError,
)
from slimmer.owner import OWNER_LABEL, current_owner
from slimmer.trace import Healthcheck, ImageConfig

with deferred("paramiko"):  # docker[ssh] loads it for ssh:// engines alone
    import docker
    import docker.constants
    import docker.errors
    import docker.tls


def ssh_errors() -> tuple[type[BaseException], ...]:
    """paramiko's error base (docker[ssh]: ssh:// engines), read when an
    error is being told apart, so that paramiko loads only then."""
    try:
        import paramiko
    except ImportError:  # pragma: no cover - paramiko comes with docker[ssh]
        return ()
    return (paramiko.SSHException,)


log = logging.getLogger(__name__)

RUN_LABEL = "io.slim.run"
ENGINE_HINT = (
    "start it with `bash scripts/engine.sh` (or `sudo dockerd &`), or choose another engine "
    "(-H/--host, --context, DOCKER_HOST, DOCKER_CONTEXT)"
)
DEFAULT_SOCKETS = (None, "unix:///var/run/docker.sock", "unix:///run/docker.sock")


ANSWER_TIMEOUT = 10.0  # how long a connected engine may take to answer a ping


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


# docker-py keeps an ssh channel open for each of the last 9 URLs it asked; an
# sshd allows 10 sessions a connection: with a log stream and a wait going on,
# the next channel was refused ("Secsh channel open FAILED"). 4 leave room.
SSH_POOLS = 4


def _pool_options(host: str | None) -> dict[str, Any]:
    return {"num_pools": SSH_POOLS} if host and host.startswith("ssh://") else {}


def _tls_config(files: TlsFiles | None) -> docker.tls.TLSConfig | None:
    if files is None:
        return None
    client_cert = (files.cert, files.key) if files.cert and files.key else None
    return docker.tls.TLSConfig(client_cert=client_cert, ca_cert=files.ca, verify=files.verify)


def _pin_engine_certificates(client: docker.DockerClient) -> None:
    """requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE replace the CA file a
    session verifies against (Session.merge_environment_settings), so an
    environment that sets them for other tools would make slim check a TLS
    engine against the wrong CA. The engine's own CA (DOCKER_CERT_PATH, the
    context's ca.pem) wins, as it does for the docker CLI; proxies and the
    rest of the environment still apply."""
    api = client.api
    engine_ca = api.verify
    if not isinstance(engine_ca, str):
        return
    merge = api.merge_environment_settings

    def merge_keeping_the_engine_ca(*args: Any, **kwargs: Any) -> dict[str, Any]:
        settings = dict(merge(*args, **kwargs))
        settings["verify"] = engine_ca
        return settings

    api.merge_environment_settings = merge_keeping_the_engine_ca  # type: ignore[method-assign]


def _ssh_error(exc: BaseException, where: str) -> EngineError:
    """paramiko's refusals in slim's words: an unknown host key, a refused key."""
    text = _short(exc)
    if "known_hosts" in text or "not found in known" in text:
        return EngineError(
            f"the ssh host of the engine at {where} is not known: {text}",
            "check its host key and add it to ~/.ssh/known_hosts (e.g. ssh once to it "
            "and accept the key); slim never accepts an unknown host key",
        )
    if type(exc).__name__ == "AuthenticationException":
        return EngineError(
            f"ssh refused the login to the engine at {where}: {text}",
            "check the user and key (ssh-add, IdentityFile in ~/.ssh/config)",
        )
    return EngineError(f"ssh to the engine at {where} failed: {text}", ENGINE_HINT)


class Engine:
    """A connected engine client; a context manager that closes it.

    with Engine.connect(endpoint) as engine:
        ...
    """

    def __init__(
        self,
        client: docker.DockerClient,
        run_prefix: str = "",
        *,
        endpoint: EngineEndpoint | None = None,
        version: dict[str, Any] | None = None,
        published_host: str | None = None,
    ) -> None:
        self.client = client
        self.run_prefix = run_prefix
        self.endpoint = endpoint or EngineEndpoint(None, None, "")
        self.version_info = version if version is not None else dict(client.version())
        self.kind = engine_kind_of(self.version_info)
        self.given_published_host = published_host
        self._unreported_said: set[str] = set()
        self._said_where_published = False
        # bundle digest -> its volume on this engine (None: copy it); slimmer.sensorcache
        self.sensor_volumes: dict[str, str | None] = {}

    def new_run_id(self) -> str:
        """The label value of a new run's containers (see RUN_LABEL)."""
        return new_run_id(self.run_prefix)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @classmethod
    def connect(
        cls,
        endpoint: EngineEndpoint,
        *,
        timeout: int = 120,
        run_prefix: str = "",
        answer_timeout: float = ANSWER_TIMEOUT,
        published_host: str | None = None,
    ) -> Engine:
        """Connect to the engine at `endpoint` (see slimmer.endpoint). An
        engine that does not answer within `answer_timeout` seconds is an
        error that says so; one that is not there fails at once. Every run
        id this engine hands out starts with `run_prefix`. `published_host`
        names where the engine's published ports are reached from here
        (default: found from the endpoint, see published_host_for)."""
        if not RUN_ID_PREFIX.fullmatch(run_prefix):
            raise UsageError(f"bad run prefix {run_prefix!r}", "use up to 32 of a-z, 0-9 and -")
        where = endpoint.describe()
        try:
            client = docker.DockerClient(
                base_url=endpoint.host,
                tls=_tls_config(endpoint.tls),
                # A fixed version: "auto" would ask the engine before the
                # certificates are pinned below (see _pin_engine_certificates).
                version=docker.constants.MINIMUM_DOCKER_API_VERSION,
                timeout=answer_timeout,
                **_pool_options(endpoint.host),
            )
            _pin_engine_certificates(client)
            version = dict(client.version(api_version=False))
            client.api._version = str(version["ApiVersion"])
        except docker.errors.TLSParameterError as exc:
            raise EngineError(
                f"the TLS files for the engine at {where} are not usable: {exc}",
                "DOCKER_CERT_PATH (or the context) must hold ca.pem, cert.pem and key.pem",
            ) from None
        except ssh_errors() as exc:
            raise _ssh_error(exc, where) from None
        except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
            if _timed_out(exc):
                raise EngineError(
                    f"the Docker engine at {where} did not answer within {answer_timeout:.0f}s",
                    "is it overloaded or hung? check its log, or restart it",
                ) from None
            raise EngineError(
                f"the Docker engine at {where} is not reachable ({_root_cause(exc)})", ENGINE_HINT
            ) from None
        except (KeyError, TypeError, ValueError):
            raise EngineError(
                f"the engine at {where} answered /version without an ApiVersion",
                "is it a Docker-compatible engine?",
            ) from None
        client.api.timeout = timeout  # long operations (builds, archives) get longer
        return cls(
            client, run_prefix, endpoint=endpoint, version=version, published_host=published_host
        )

    @classmethod
    def from_environment(cls, env: Mapping[str, str], **options: Any) -> Engine:
        """connect() to the engine the environment chooses (DOCKER_HOST,
        DOCKER_CONTEXT, the docker CLI's current context), as docker does."""
        return cls.connect(choose_endpoint(None, None, env), **options)

    @property
    def ssh_hostname(self) -> str | None:
        """The host an ssh:// engine is reached on (after ~/.ssh/config)."""
        adapter = getattr(self.client.api, "_custom_adapter", None)
        params = getattr(adapter, "ssh_params", None) or {}
        hostname = params.get("hostname")
        return str(hostname) if hostname else None

    @property
    def published_host(self) -> str:
        """Where published ports are reached from here: --published-host when
        given, else loopback for a local engine, the engine's host otherwise."""
        if self.given_published_host:
            return self.given_published_host
        return published_host_for(str(self.client.api.base_url), self.ssh_hostname)

    @property
    def publish_address(self) -> str:
        """The address ports are published on: loopback when they are reached
        on loopback (the engine is on this machine), else every interface of
        the engine's host (its loopback is not reachable from here)."""
        return LOOPBACK if is_loopback(self.published_host) else ALL_INTERFACES

    def unanswered_hint(self) -> str | None:
        """What to say when published ports do not answer on 127.0.0.1: the
        engine may be on another machine behind a tunnel or a forwarded
        socket, which slim cannot tell from its address."""
        if self.given_published_host or self.published_host != LOOPBACK:
            return None
        if self.endpoint.host in DEFAULT_SOCKETS:
            return None
        return (
            f"if the engine at {self.endpoint.host} runs on another machine (a tunnel, a "
            "forwarded socket), name where its published ports are reachable: "
            "slim --published-host ADDRESS ..."
        )

    def publish(self, ports: list[int]) -> dict[str, tuple[str, None]]:
        """A `ports=` option publishing TCP ports on a free host port each.
        Where they are open on an engine elsewhere is said, once."""
        address = self.publish_address
        if ports and address == ALL_INTERFACES and not self._said_where_published:
            self._said_where_published = True
            log.info(
                "the engine is not on this machine: its published ports are open on all its "
                "interfaces while a run lasts, and probed at %s",
                self.published_host,
            )
        return {f"{port}/tcp": (address, None) for port in ports}

    @property
    def platform(self) -> str:
        """The engine's own platform, as os/arch (linux/amd64)."""
        info = self.version_info
        return f"{info.get('Os') or 'linux'}/{info.get('Arch') or '?'}"

    def close(self) -> None:
        self.client.close()

    def version(self) -> str:
        return str(self.version_info.get("Version", "?"))

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

    def image_config(self, image: str, attrs: dict[str, Any] | None = None) -> ImageConfig:
        """The parts of the image's config the micro image keeps. Podman's
        compat inspect (4.x) leaves out HEALTHCHECK and SHELL and says [] for
        a missing ENTRYPOINT: they are read from its own API and the image's
        history; what cannot be read is named in `unreported`, and said."""
        attrs = attrs if attrs is not None else self.image_attrs(image)
        config = ImageConfig.from_inspect(attrs)
        if self.kind is EngineKind.PODMAN:
            config = self._podman_config(image, config)
        if config.unreported and str(attrs.get("Id")) not in self._unreported_said:
            self._unreported_said.add(str(attrs.get("Id")))
            log.warning(
                "the engine (%s) does not report the %s of %s: %s",
                self.kind.value,
                " and ".join(name.upper() for name in config.unreported),
                image,
                UNREPORTED_EFFECT,
            )
        return config

    def _podman_config(self, image: str, config: ImageConfig) -> ImageConfig:
        api = self.client.api
        try:
            libpod = api._result(api._get(api._url("/libpod/images/{0}/json", image)), json=True)
            history = api.history(image)
        except docker.errors.APIError as exc:
            raise EngineError(f"inspecting {image!r} on Podman failed: {_short(exc)}") from None
        own = libpod.get("Config") or {}
        entrypoint = own.get("Entrypoint")
        shell, shell_known = shell_from_history(history)
        unreported = list(config.unreported)
        if config.shell is None and not shell_known:
            unreported.append("shell")
        return replace(
            config,
            # The image's own config keeps a missing ENTRYPOINT missing (null).
            entrypoint=None if entrypoint is None else tuple(str(p) for p in entrypoint),
            healthcheck=config.healthcheck or Healthcheck.from_inspect(libpod.get("Healthcheck")),
            stop_signal=config.stop_signal or own.get("StopSignal") or None,
            shell=config.shell or shell,
            unreported=tuple(unreported),
        )

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
        healthcheck: Healthcheck | None = None,
        volumes: tuple[VolumeMount, ...] = (),
    ) -> Iterator[ContainerRef]:
        """A created (not started) container, labelled and always removed.
        `ports` are published on a free host port each (see `publish`);
        `environment` adds to (and overrides) the image's ENV; `network_of`
        shares another container's network (its 127.0.0.1 is this one's);
        `healthcheck` replaces the image's (durations in nanoseconds);
        `volumes` mounts named volumes. The labels name the run and the
        process that made it (slimmer.owner), so `slim prune` can tell the
        containers of runs that died from those of runs going on."""
        labels = {RUN_LABEL: run_id, OWNER_LABEL: current_owner()}
        options: dict[str, Any] = {"command": command, "labels": labels}
        if volumes:
            options["volumes"] = {
                mount.name: {"bind": mount.path, "mode": "ro" if mount.read_only else "rw"}
                for mount in volumes
            }
        if healthcheck is not None:
            options["healthcheck"] = {
                "test": list(healthcheck.test),
                "interval": healthcheck.interval,
                "timeout": healthcheck.timeout,
                "retries": healthcheck.retries,
                "start_period": healthcheck.start_period,
            }
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
            # A signal that stopped slim while the engine was still creating
            # the container would leave it behind (the engine finishes the
            # request whether slim waits or not, and listing by label before
            # it has would find nothing): the create is one step, with the
            # terminating signals held until it answered.
            with signals_held():
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
                else:  # the create failed (an engine error, a time-out): one may be there
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
        """Start a created container. The OCI runtime's refusals are told
        apart from the engine's: CommandNotRunnable (the image's command),
        RuntimeRefused (a limit or policy of the host)."""
        try:
            self.client.api.start(ref.id)
        except docker.errors.APIError as exc:
            raise start_error(_short(exc)) from None

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
        environment: dict[str, str] | None = None,
    ) -> tuple[int, bytes, bytes]:
        """Run a container to its end: exit status, stdout, stderr."""
        with self.container(
            image,
            run_id,
            command=command,
            entrypoint=entrypoint,
            user=user,
            network_of=network_of,
            environment=environment,
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
        platform: str | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> str:
        """Build an image from a tar context (Dockerfile at its top); returns
        the image id. `labels` and `build_args` reach the builder as data,
        never parsed as Dockerfile text (labels the user adds with --label
        too). Build output goes to `progress` line by line."""
        image_id = None
        try:
            for message in self.client.api.build(
                fileobj=context,
                custom_context=True,
                tag=tag,
                labels=labels or None,
                buildargs=build_args,
                platform=platform,
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

    def tag(self, image: str, reference: str) -> None:
        """Give an image one more name (repository[:tag])."""
        repository, tag = split_reference(reference)
        try:
            if not self.client.api.tag(image, repository, tag):
                raise EngineError(f"the engine did not tag {image[:19]} as {reference}")
        except docker.errors.APIError as exc:
            raise EngineError(f"tagging {reference} failed: {_short(exc)}") from None

    @contextmanager
    def saved_image(self, names: list[str]) -> Iterator[BinaryIO]:
        """The engine's `docker save` archive of an image under its names,
        streamed (never held in memory); closed on the way out."""
        api = self.client.api
        try:
            response = api._get(api._url("/images/get"), params={"names": names}, stream=True)
            api._raise_for_status(response)
        except docker.errors.APIError as exc:
            raise EngineError(f"saving {', '.join(names)} failed: {_short(exc)}") from None
        try:
            chunks = response.iter_content(chunk_size=1 << 20, decode_unicode=False)
            yield ChunkReader(chunks)  # type: ignore[misc]
        finally:
            response.close()

    def push(self, reference: str, progress: Callable[[str, int, int], None] | None = None) -> str:
        """Push an image to its registry with the engine's credentials (the
        docker CLI's config: ~/.docker/config.json or $DOCKER_CONFIG);
        returns the digest the registry gave. `progress` gets each layer's
        status and bytes pushed of its size, as docker push shows them."""
        repository, tag = split_reference(reference)
        digest = ""
        try:
            for message in self.client.api.push(repository, tag=tag, stream=True, decode=True):
                if "error" in message:
                    detail = message.get("errorDetail", {}).get("message") or message["error"]
                    raise EngineError(
                        f"pushing {reference} failed: {str(detail).strip()}",
                        "log in to the registry (docker login REGISTRY), or check that it "
                        "answers; a registry on 127.0.0.1 needs no TLS",
                    )
                detail = message.get("progressDetail") or {}
                if progress is not None and message.get("status"):
                    progress(
                        str(message.get("id") or ""),
                        int(detail.get("current") or 0),
                        int(detail.get("total") or 0),
                    )
                aux = message.get("aux") or {}
                digest = str(aux.get("Digest") or digest)
        except docker.errors.APIError as exc:
            raise EngineError(f"pushing {reference} failed: {_short(exc)}") from None
        except (requests.RequestException, OSError) as exc:
            raise EngineError(f"pushing {reference} failed: {_root_cause(exc)}") from None
        return digest

    # ---- volumes

    def volume(self, name: str) -> VolumeInfo | None:
        """A volume's creation time and labels; None when there is none."""
        try:
            return volume_info(self.client.api.inspect_volume(name))
        except docker.errors.NotFound:
            return None
        except docker.errors.APIError as exc:
            raise EngineError(f"inspecting volume {name} failed: {_short(exc)}") from None

    def volumes_labelled(self, label: str, value: str | None = None) -> list[VolumeInfo]:
        """The volumes that carry a label (with that value, when given)."""
        wanted = f"{label}={value}" if value is not None else label
        try:
            found = self.client.api.volumes(filters={"label": wanted}).get("Volumes") or []
        except docker.errors.APIError as exc:
            raise EngineError(f"listing volumes failed: {_short(exc)}") from None
        return [volume_info(volume) for volume in found]

    def create_volume(self, name: str, labels: dict[str, str]) -> VolumeInfo:
        try:
            return volume_info(self.client.api.create_volume(name, labels=labels))
        except docker.errors.APIError as exc:
            raise EngineError(f"creating volume {name} failed: {_short(exc)}") from None

    def remove_volume(self, name: str) -> bool:
        """Remove a volume; False when a container uses it (or it is gone)."""
        try:
            self.client.api.remove_volume(name)
        except docker.errors.NotFound:
            return False
        except docker.errors.APIError as exc:
            if exc.status_code == 409:
                return False
            raise EngineError(f"removing volume {name} failed: {_short(exc)}") from None
        return True

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
        member with the requested name is accepted. It is streamed: a file
        its header says is larger than `max_bytes` is refused before it is
        read (FileTooLarge), and the response is closed on every path.
        """
        with self._archive_member(ref, path) as found:
            if found is None:
                return None
            member, archive, handle = found
            if member.size > max_bytes:
                raise FileTooLarge(path, member.size, max_bytes)
            try:
                data = handle.read()
                more = archive.next()
            except (requests.exceptions.RequestException, tarfile.TarError) as exc:
                raise EngineError(f"copying {path} out of the container failed: {exc}") from None
            if len(data) != member.size or more is not None:
                raise EngineError(f"unexpected archive for {path}")
            return data

    @contextmanager
    def open_archive(self, ref: ContainerRef, path: str) -> Iterator[BinaryIO]:
        """The engine's tar of a path in a container, streamed (not held in
        memory). It is untrusted: read it member by member. The response is
        closed on the way out (see _archive_member)."""
        response = self._archive_response(ref, path)
        if response is None:
            raise EngineError(f"{path} is not in the container")
        try:
            chunks = response.iter_content(chunk_size=1 << 20, decode_unicode=False)
            yield io.BufferedReader(ChunkReader(chunks), 1 << 20)
        finally:
            response.close()

    @contextmanager
    def open_file_stream(self, ref: ContainerRef, path: str) -> Iterator[BinaryIO]:
        """Stream one regular file out of a (stopped) container, without
        holding it in memory. The engine's archive is untrusted: it must hold
        exactly that one regular file."""
        with self._archive_member(ref, path) as found:
            if found is None:
                raise EngineError(f"{path} is not in the container")
            yield found[2]

    @contextmanager
    def _archive_member(
        self, ref: ContainerRef, path: str
    ) -> Iterator[tuple[tarfile.TarInfo, tarfile.TarFile, BinaryIO] | None]:
        """The engine's archive of `path`, streamed: its one member (a
        regular file of that name), the archive and the member's data; None
        when the container has no such path.

        The HTTP response is closed on the way out, also on an error or
        Ctrl-C: while it is open the engine keeps the container busy, and
        removing it would wait for the whole archive."""
        response = self._archive_response(ref, path)
        if response is None:
            yield None
            return
        try:
            chunks = response.iter_content(chunk_size=1 << 20, decode_unicode=False)
            try:
                archive = tarfile.open(fileobj=ChunkReader(chunks), mode="r|")  # noqa: SIM115
                member = archive.next()
            except (requests.exceptions.RequestException, tarfile.TarError) as exc:
                raise EngineError(
                    f"copying {path} out of the container failed: {_short(exc)}"
                ) from None
            with archive:
                if member is None or not member.isreg() or member.name != basename(path):
                    raise EngineError(f"unexpected archive for {path}")
                handle = archive.extractfile(member)
                if handle is None:
                    raise EngineError(f"unexpected archive for {path}")
                yield member, archive, handle
        finally:
            response.close()

    def _archive_response(self, ref: ContainerRef, path: str) -> requests.Response | None:
        """The engine's streamed answer to GET .../archive?path= (closed
        here if it is an error), None for a path the container lacks."""
        api = self.client.api
        try:
            # docker-py's get_archive gives no handle on the response to close.
            response = api._get(
                api._url("/containers/{0}/archive", ref.id),
                params={"path": path},
                stream=True,
                headers={"Accept-Encoding": "identity"},
            )
        except requests.exceptions.RequestException as exc:
            raise EngineError(f"copying {path} out of the container failed: {exc}") from None
        try:
            api._raise_for_status(response)
        except docker.errors.NotFound:
            response.close()
            return None
        except docker.errors.APIError as exc:
            response.close()
            raise EngineError(
                f"copying {path} out of the container failed: {_short(exc)}"
            ) from None
        return response

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

    def exit_status(self, ref: ContainerRef) -> int | None:
        """The status a container exited with; None while it runs."""
        try:
            state = self.client.api.inspect_container(ref.id).get("State") or {}
        except docker.errors.APIError as exc:
            raise EngineError(f"inspecting the container failed: {_short(exc)}") from None
        if str(state.get("Status")) in ("created", "running", "restarting", "paused"):
            return None
        return int(state.get("ExitCode") or 0)

    def health(self, ref: ContainerRef) -> HealthState:
        """The container's health as the engine judges it from its own runs of
        the HEALTHCHECK. Podman runs checks from systemd timers, which a
        service without systemd does not have: there slim asks Podman to run
        the check itself (its healthcheck endpoint), as its timer would."""
        api = self.client.api
        try:
            if self.kind is EngineKind.PODMAN:
                with suppress(docker.errors.APIError):  # not running (any more)
                    api._result(api._get(api._url("/libpod/containers/{0}/healthcheck", ref.id)))
            state = api.inspect_container(ref.id).get("State") or {}
        except docker.errors.APIError as exc:
            raise EngineError(f"inspecting the container failed: {_short(exc)}") from None
        health = state.get("Health") or state.get("Healthcheck") or {}
        entries = health.get("Log") or []
        last = entries[-1] if entries else {}
        return HealthState(
            status=str(health.get("Status") or ""),
            failing_streak=int(health.get("FailingStreak") or 0),
            last_exit=int(last["ExitCode"]) if "ExitCode" in last else None,
            last_output=str(last.get("Output") or ""),
        )

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
                "container",
                c["Names"][0].lstrip("/"),
                (c.get("Labels") or {}).get(RUN_LABEL, ""),
                (c.get("Labels") or {}).get(OWNER_LABEL, ""),
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


class FileTooLarge(EngineError):
    """A file in a container is larger than the caller reads."""

    def __init__(self, path: str, size: int, limit: int) -> None:
        super().__init__(f"{path} in the container is {size} bytes, more than {limit}")
        self.size = size
        self.limit = limit


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "explanation", None) or exc)
    return text.splitlines()[0] if text else type(exc).__name__


__all__ = [
    "ALL_INTERFACES",
    "ENGINE_HINT",
    "LOOPBACK",
    "RUN_ID_PREFIX",
    "RUN_LABEL",
    "UNREPORTED_EFFECT",
    "ChunkReader",
    "ContainerRef",
    "Engine",
    "EngineKind",
    "ExecResult",
    "FileTooLarge",
    "HealthState",
    "Leftover",
    "basename",
    "engine_kind_of",
    "is_loopback",
    "new_run_id",
    "published_host_for",
    "shell_from_history",
    "split_reference",
    "start_error",
]
