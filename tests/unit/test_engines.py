"""Choosing the engine as the docker CLI does, and reading what engines
say: contexts in a configuration directory made here (the layout `docker
context create` writes), the OCI runtime's refusals as Docker and Podman
word them, the SHELL in an image history, platforms and labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slimmer.builder import check_platform, parse_platform
from slimmer.cli.options import parse_labels
from slimmer.endpoint import EndpointError, EngineEndpoint, TlsFiles, choose_endpoint, context_id
from slimmer.engine import published_host_for, shell_from_history, start_error
from slimmer.errors import (
    CommandNotRunnable,
    EngineError,
    ExitCode,
    RuntimeRefused,
    UsageError,
)


def make_context(
    config: Path, name: str, host: str, *, tls: bool = False, skip_verify: bool = False
) -> None:
    """A context as `docker context create NAME --docker host=HOST[,ca=..]` leaves it."""
    meta = config / "contexts" / "meta" / context_id(name)
    meta.mkdir(parents=True)
    endpoint = {"Host": host, "SkipTLSVerify": skip_verify}
    (meta / "meta.json").write_text(
        json.dumps({"Name": name, "Metadata": {}, "Endpoints": {"docker": endpoint}})
    )
    if tls:
        certs = config / "contexts" / "tls" / context_id(name) / "docker"
        certs.mkdir(parents=True)
        for part in ("ca", "cert", "key"):
            (certs / f"{part}.pem").write_text(part)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / ".docker").mkdir()
    make_context(tmp_path / ".docker", "remote", "tcp://10.0.0.2:2375")
    make_context(tmp_path / ".docker", "secure", "tcp://10.0.0.3:2376", tls=True)
    return tmp_path


def use_context(home: Path, name: str) -> None:
    (home / ".docker" / "config.json").write_text(json.dumps({"currentContext": name}))


def test_nothing_chosen_is_the_local_socket(home: Path) -> None:
    assert choose_endpoint(None, None, {"HOME": str(home)}) == EngineEndpoint(None, None, "")


def test_a_context_is_followed_without_config_json(home: Path) -> None:
    """`docker context create` writes no config.json; DOCKER_CONTEXT still works."""
    chosen = choose_endpoint(None, None, {"HOME": str(home), "DOCKER_CONTEXT": "remote"})
    assert chosen.host == "tcp://10.0.0.2:2375" and chosen.tls is None
    assert "DOCKER_CONTEXT" in chosen.chosen_by


def test_the_current_context_is_followed(home: Path) -> None:
    use_context(home, "remote")
    assert choose_endpoint(None, None, {"HOME": str(home)}).host == "tcp://10.0.0.2:2375"


def test_precedence_is_the_docker_clis(home: Path) -> None:
    use_context(home, "remote")
    env = {"HOME": str(home), "DOCKER_CONTEXT": "secure"}
    assert choose_endpoint(None, None, env).host == "tcp://10.0.0.3:2376"  # over currentContext
    env["DOCKER_HOST"] = "tcp://10.0.0.9:2375"
    assert choose_endpoint(None, None, env).host == "tcp://10.0.0.9:2375"  # over DOCKER_CONTEXT
    assert choose_endpoint(None, "remote", env).host == "tcp://10.0.0.2:2375"  # --context first
    assert choose_endpoint("unix:///x.sock", None, env).host == "unix:///x.sock"  # -H first


def test_host_and_context_together_are_refused(home: Path) -> None:
    with pytest.raises(EndpointError, match="conflicting options"):
        choose_endpoint("tcp://a:1", "remote", {"HOME": str(home)})


@pytest.mark.parametrize("how", ["option", "variable", "current"])
def test_an_unknown_context_is_an_error(home: Path, how: str) -> None:
    env = {"HOME": str(home)}
    if how == "variable":
        env["DOCKER_CONTEXT"] = "nope"
    if how == "current":
        use_context(home, "nope")
    with pytest.raises(EndpointError, match="context 'nope'") as raised:
        choose_endpoint(None, "nope" if how == "option" else None, env)
    assert raised.value.exit_code is ExitCode.USAGE
    assert "docker context ls" in (raised.value.hint or "")


def test_a_tls_context_brings_its_certificates(home: Path) -> None:
    chosen = choose_endpoint(None, "secure", {"HOME": str(home)})
    certs = home / ".docker" / "contexts" / "tls" / context_id("secure") / "docker"
    assert chosen.tls == TlsFiles(
        str(certs / "ca.pem"), str(certs / "cert.pem"), str(certs / "key.pem"), verify=True
    )


def test_docker_config_names_the_configuration_directory(home: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    make_context(elsewhere, "other", "ssh://me@10.0.0.4")
    env = {"HOME": str(home), "DOCKER_CONFIG": str(elsewhere), "DOCKER_CONTEXT": "other"}
    assert choose_endpoint(None, None, env).host == "ssh://me@10.0.0.4"


def test_the_default_context_is_the_environments(home: Path) -> None:
    env = {"HOME": str(home), "DOCKER_CONTEXT": "default"}
    assert choose_endpoint(None, None, env).host is None


def test_tls_variables_are_read_as_docker_reads_them(tmp_path: Path) -> None:
    env = {"DOCKER_HOST": "tcp://h:2376", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": "/c"}
    assert choose_endpoint(None, None, env).tls == TlsFiles(
        "/c/ca.pem", "/c/cert.pem", "/c/key.pem", verify=True
    )
    no_verify = choose_endpoint(None, None, {**env, "DOCKER_TLS_VERIFY": ""}).tls
    assert no_verify is not None and not no_verify.verify
    assert choose_endpoint("tcp://h:2376", None, env).tls is not None  # -H keeps the TLS settings
    plain = {"DOCKER_HOST": "tcp://h:2375", "HOME": str(tmp_path)}
    assert choose_endpoint(None, None, plain).tls is None


def test_a_broken_config_json_is_an_error(home: Path) -> None:
    (home / ".docker" / "config.json").write_text("{not json")
    with pytest.raises(EndpointError, match="is not JSON"):
        choose_endpoint(None, None, {"HOME": str(home)})


@pytest.mark.parametrize(
    ("base_url", "ssh_hostname", "host"),
    [
        ("http+docker://localhost", None, "127.0.0.1"),
        ("http+docker://localunixsocket", None, "127.0.0.1"),
        ("http://10.1.2.3:2375", None, "10.1.2.3"),
        ("https://engine.example:2376", None, "engine.example"),
        ("http://127.0.0.1:23077", None, "127.0.0.1"),  # a tunnel looks local
        ("http://[::1]:2375", None, "127.0.0.1"),
        ("http+docker://ssh", "10.199.7.2", "10.199.7.2"),  # after ~/.ssh/config's HostName
        ("http+docker://ssh", "localhost", "127.0.0.1"),
    ],
)
def test_where_published_ports_are_reached(
    base_url: str, ssh_hostname: str | None, host: str
) -> None:
    assert published_host_for(base_url, ssh_hostname) == host


@pytest.mark.parametrize(
    ("history", "shell", "known"),
    [
        ([{"CreatedBy": '/bin/sh -c #(nop) SHELL ["/bin/ash", "-c"]'}], ("/bin/ash", "-c"), True),
        (  # the newest SHELL wins
            [
                {"CreatedBy": '/bin/sh -c #(nop) CMD ["x"]'},
                {"CreatedBy": '/bin/sh -c #(nop) SHELL ["/bin/bash", "-o", "pipefail", "-c"]'},
                {"CreatedBy": '/bin/sh -c #(nop) SHELL ["/bin/ash", "-c"]'},
            ],
            ("/bin/bash", "-o", "pipefail", "-c"),
            True,
        ),
        ([{"CreatedBy": "/bin/ash -c #(nop)  SHELL [/bin/ash -c]"}], None, False),  # Docker's
        ([{"CreatedBy": "SHELL [/bin/ash -c]"}], None, False),  # BuildKit's
        ([{"CreatedBy": "/bin/sh -c echo SHELL [x]"}], None, True),  # a RUN, not a SHELL
        ([{"CreatedBy": '/bin/sh -c #(nop) CMD ["sh"]'}], None, True),  # none: the default
        ([], None, False),  # no history: cannot tell
    ],
)
def test_the_shell_from_an_image_history(
    history: list[dict[str, str]], shell: tuple[str, ...] | None, known: bool
) -> None:
    assert shell_from_history(history) == (shell, known)


# What the engines answered here when a container could not start (Docker
# 20.10 and Podman 4.3, both with runc).
DOCKER_NO_COMMAND = (
    "failed to create shim task: OCI runtime create failed: runc create failed: unable to "
    'start container process: exec: "/nope": stat /nope: no such file or directory: unknown'
)
PODMAN_NO_COMMAND = (
    'runc: runc create failed: unable to start container process: exec: "/nope": stat /nope: '
    "no such file or directory: OCI runtime attempted to invoke a command that was not found"
)
PODMAN_RLIMIT = (
    "runc: runc create failed: unable to start container process: error during container "
    "init: error setting rlimits for ready process: error setting rlimit type 7: operation "
    "not permitted: OCI permission denied"
)
DOCKER_RLIMIT = (
    "failed to create shim task: OCI runtime create failed: runc create failed: unable to "
    "start container process: error during container init: error setting rlimits for ready "
    "process: error setting rlimit type 7: operation not permitted: unknown"
)


@pytest.mark.parametrize("explanation", [DOCKER_NO_COMMAND, PODMAN_NO_COMMAND])
def test_a_command_that_cannot_start_is_the_images(explanation: str) -> None:
    error = start_error(explanation)
    assert isinstance(error, CommandNotRunnable) and error.exit_code is ExitCode.NOT_FOUND
    assert error.message.startswith('the container\'s command cannot run: exec: "/nope"')


@pytest.mark.parametrize("explanation", [PODMAN_RLIMIT, DOCKER_RLIMIT])
def test_a_runtime_refusal_is_a_limit_of_the_host(explanation: str) -> None:
    error = start_error(explanation)
    assert isinstance(error, RuntimeRefused) and error.exit_code is ExitCode.RESOURCE
    assert "error setting rlimit type 7" in error.message
    assert "ulimit" in (error.hint or "")


def test_other_refusals_stay_the_engines() -> None:
    error = start_error("No such container: c56b230d8deb")
    assert type(error) is EngineError and error.exit_code is ExitCode.ENGINE


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("linux/amd64", ("linux", "amd64", None)),
        ("linux/x86_64", ("linux", "amd64", None)),
        ("Linux/AArch64/v8", ("linux", "arm64", "v8")),
        ("linux", ("linux", None, None)),
    ],
)
def test_platforms_are_read_as_the_engines_name_them(
    text: str, parsed: tuple[str, str | None, str | None]
) -> None:
    assert parse_platform(text) == parsed


def test_only_the_engines_own_platform_is_built() -> None:
    check_platform("linux/amd64", "linux/amd64")
    check_platform("linux/x86_64", "linux/amd64")
    check_platform("linux", "linux/amd64")
    with pytest.raises(UsageError, match="the engine runs linux/amd64 images"):
        check_platform("linux/arm64", "linux/amd64")
    with pytest.raises(UsageError, match="is not os"):
        check_platform("linux amd64", "linux/amd64")


def test_labels_are_read_as_docker_build_reads_them() -> None:
    assert parse_labels(("a=b", "c=d=e", "empty")) == {"a": "b", "c": "d=e", "empty": ""}
    with pytest.raises(UsageError, match="bad --label"):
        parse_labels(("=x",))
