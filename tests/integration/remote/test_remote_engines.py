"""slim on engines that are not this machine's local socket: TCP, TLS, a
local tunnel, ssh://, docker contexts (see conftest.py for the set-up).

The engine in its own network namespace publishes ports on its own address,
never on this machine's 127.0.0.1: a slim that probes loopback fails there.
Each way of choosing an engine is followed as the docker CLI follows it."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import certifi
import pytest

from slimmer.engine import Engine
from slimmer.errors import ExitCode
from tests.conftest import session_tag
from tests.helpers.slimrun import SlimRun, run_slim
from tests.integration.remote.conftest import FIXTURE, REMOTE_ONLY, RemoteEngine

# slim's own options (before the command), spelled like docker's where docker has them.
PUBLISHED_HOST_OPTION = "--published-host"  # where the engine's published ports are reached
CONTEXT_OPTION = "--context"
HOST_OPTION = "-H"

# A clean slate: no engine selection inherited from the environment of the test run.
NO_ENGINE_ENV: dict[str, str | None] = {
    name: None
    for name in (
        "DOCKER_HOST",
        "DOCKER_CONTEXT",
        "DOCKER_TLS_VERIFY",
        "DOCKER_CERT_PATH",
        "DOCKER_CONFIG",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
    )
}
CA_BUNDLE_ENV = {"REQUESTS_CA_BUNDLE": certifi.where(), "CURL_CA_BUNDLE": certifi.where()}


def engine_env(**changes: str | None) -> dict[str, str | None]:
    return {**NO_ENGINE_ENV, **changes}


def trace_build_verify(
    work: Path, env: Mapping[str, str | None], *slim_options: str, image: str = FIXTURE
) -> list[SlimRun]:
    """The main job on one engine; each step must succeed. `slim_options`
    go before the command."""
    trace, tag = work / "trace.json", session_tag(f"remote-{work.name.lower()}:micro")
    steps = [
        (*slim_options, "trace", image, "-o", str(trace), "--ready-timeout", "5"),
        (
            *slim_options,
            "build",
            image,
            "-t",
            tag,
            "--trace",
            str(trace),
            "--report",
            str(work / "r.json"),
        ),
        (*slim_options, "verify", image, tag, "--trace", str(trace)),
    ]
    runs = []
    for argv in steps:
        ran = run_slim(*argv, env=env)
        assert ran.exit_code == 0, ran.describe()
        runs.append(ran)
    assert "answers like" in runs[-1].output
    return runs


def finds_remote_only_image(*argv: str, env: Mapping[str, str | None]) -> SlimRun:
    """slim talks to the remote engine: only it has REMOTE_ONLY."""
    ran = run_slim(*argv, "compare", REMOTE_ONLY, "--no-files", env=env, timeout=120)
    assert ran.exit_code == 0, ran.describe()
    assert REMOTE_ONLY in ran.stdout
    return ran


# ---- TCP and TLS


def test_tcp_engine(remote_engine: RemoteEngine, tmp_path: Path) -> None:
    traced, _, _ = trace_build_verify(tmp_path, engine_env(DOCKER_HOST=remote_engine.tcp_host))
    # Published on the engine's interfaces (its loopback is not this machine's), and said.
    assert (
        f"open on all its interfaces while a run lasts, and probed at {remote_engine.engine_ip}"
        in traced.stderr
    )


def tls_env(remote: RemoteEngine, **changes: str | None) -> dict[str, str | None]:
    return engine_env(
        DOCKER_HOST=remote.tls_host,
        DOCKER_TLS_VERIFY="1",
        DOCKER_CERT_PATH=str(remote.tls_cert_path),
        **changes,
    )


def test_tls_engine(remote_engine: RemoteEngine, tmp_path: Path) -> None:
    trace_build_verify(tmp_path, tls_env(remote_engine))


def test_tls_engine_certificates_win_over_requests_ca_bundle(remote_engine: RemoteEngine) -> None:
    finds_remote_only_image(env=tls_env(remote_engine, **CA_BUNDLE_ENV))


def test_tls_engine_refuses_a_client_without_certificates(remote_engine: RemoteEngine) -> None:
    """The TLS listener really verifies: no client certificate, no engine."""
    ran = run_slim(
        "compare",
        REMOTE_ONLY,
        "--no-files",
        env=engine_env(DOCKER_HOST=remote_engine.tls_host),
        timeout=120,
    )
    assert ran.exit_code == ExitCode.ENGINE, ran.describe()


# ---- a tunnel: a remote engine behind a local port


def test_tunnelled_engine_with_its_published_host(
    remote_engine: RemoteEngine, tmp_path: Path
) -> None:
    trace_build_verify(
        tmp_path,
        engine_env(DOCKER_HOST=remote_engine.tunnel_host),
        PUBLISHED_HOST_OPTION,
        remote_engine.engine_ip,
    )


def test_tunnelled_engine_without_it_says_what_to_do(
    remote_engine: RemoteEngine, tmp_path: Path
) -> None:
    ran = run_slim(
        "trace",
        FIXTURE,
        "-o",
        str(tmp_path / "t.json"),
        "--ready-timeout",
        "5",
        env=engine_env(DOCKER_HOST=remote_engine.tunnel_host),
    )
    assert ran.exit_code != ExitCode.OK
    assert PUBLISHED_HOST_OPTION in ran.output, ran.describe()


# ---- ssh


def test_ssh_to_this_machine(
    engine: Engine,
    fixture_image: Callable[[str], str],
    remote_engine: RemoteEngine,
    tmp_path: Path,
) -> None:
    """ssh://root@localhost:PORT reaches this machine's own engine, whose
    ports are published here: probing 127.0.0.1 is right."""
    image = fixture_image("healthuser")
    work = tmp_path / "sshlocal"
    work.mkdir()
    try:
        trace_build_verify(
            work,
            engine_env(DOCKER_HOST=remote_engine.ssh_local_host, HOME=str(remote_engine.ssh_home)),
            image=image,
        )
    finally:
        engine.remove_image(session_tag("remote-sshlocal:micro"))


def test_ssh_engine_elsewhere(remote_engine: RemoteEngine, tmp_path: Path) -> None:
    trace_build_verify(
        tmp_path,
        engine_env(DOCKER_HOST=remote_engine.ssh_host, HOME=str(remote_engine.ssh_home)),
    )


def test_ssh_engine_with_an_unknown_host_key_is_refused(
    remote_engine: RemoteEngine, tmp_path: Path
) -> None:
    """No known_hosts entry, no connection (the SDK's RejectPolicy)."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    key = remote_engine.ssh_home / ".ssh" / "id_ed25519"
    (home / ".ssh" / "id_ed25519").write_bytes(key.read_bytes())
    (home / ".ssh" / "id_ed25519").chmod(0o600)
    ran = run_slim(
        "compare",
        REMOTE_ONLY,
        "--no-files",
        env=engine_env(DOCKER_HOST=remote_engine.ssh_host, HOME=str(home)),
        timeout=120,
    )
    assert ran.exit_code == ExitCode.ENGINE, ran.describe()
    assert "known_hosts" in ran.stderr and "Traceback" not in ran.stderr, ran.describe()


# ---- docker contexts


@pytest.fixture(scope="module")
def context_home(remote_engine: RemoteEngine, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A HOME with two contexts made by the docker CLI (plain TCP and TLS),
    and no ~/.docker/config.json, as `docker context create` leaves it."""
    home = tmp_path_factory.mktemp("contexthome")
    certs = remote_engine.tls_cert_path
    for name, endpoint in (
        ("slim-remote-tcp", f"host={remote_engine.tcp_host}"),
        (
            "slim-remote-tls",
            f"host={remote_engine.tls_host},ca={certs / 'ca.pem'},"
            f"cert={certs / 'cert.pem'},key={certs / 'key.pem'}",
        ),
    ):
        subprocess.run(
            ["docker", "context", "create", name, "--docker", endpoint],
            env={"HOME": str(home), "PATH": "/usr/local/bin:/usr/bin:/bin"},
            check=True,
            capture_output=True,
        )
    assert not (home / ".docker" / "config.json").exists()
    return home


@pytest.fixture
def current_context_home(context_home: Path, tmp_path: Path) -> Iterator[Path]:
    """The same, after `docker context use slim-remote-tcp` (config.json
    with currentContext)."""
    home = tmp_path / "home"
    shutil.copytree(context_home, home)
    subprocess.run(
        ["docker", "context", "use", "slim-remote-tcp"],
        env={"HOME": str(home), "PATH": "/usr/local/bin:/usr/bin:/bin"},
        check=True,
        capture_output=True,
    )
    yield home


def test_current_context_is_followed(current_context_home: Path) -> None:
    finds_remote_only_image(env=engine_env(HOME=str(current_context_home)))


def test_docker_context_variable_is_followed_with_a_config_file(
    current_context_home: Path,
) -> None:
    finds_remote_only_image(
        env=engine_env(HOME=str(current_context_home), DOCKER_CONTEXT="slim-remote-tcp")
    )


def test_docker_context_variable_is_followed(context_home: Path) -> None:
    finds_remote_only_image(
        env=engine_env(HOME=str(context_home), DOCKER_CONTEXT="slim-remote-tcp")
    )


def test_tls_context_certificates_win_over_requests_ca_bundle(current_context_home: Path) -> None:
    finds_remote_only_image(
        env=engine_env(
            HOME=str(current_context_home), DOCKER_CONTEXT="slim-remote-tls", **CA_BUNDLE_ENV
        )
    )


def test_unknown_context_is_an_error(current_context_home: Path) -> None:
    ran = run_slim(
        "compare",
        "busybox:latest",
        "--no-files",
        env=engine_env(HOME=str(current_context_home), DOCKER_CONTEXT="slim-no-such-context"),
        timeout=120,
    )
    assert ran.exit_code != ExitCode.OK, ran.describe()
    assert "slim-no-such-context" in ran.output, ran.describe()


def test_context_option_is_followed(context_home: Path) -> None:
    finds_remote_only_image(
        CONTEXT_OPTION, "slim-remote-tcp", env=engine_env(HOME=str(context_home))
    )


def test_host_option_is_followed(remote_engine: RemoteEngine) -> None:
    finds_remote_only_image(HOST_OPTION, remote_engine.tcp_host, env=engine_env())
