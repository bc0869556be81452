"""The ground slim stands on: engine, base images, the fat nginx image, and
the leftover check itself."""

from __future__ import annotations

import subprocess
import time
import urllib.request

import pytest

from slimmer.engine import RUN_LABEL, Engine, FileTooLarge
from tests.conftest import REPO


def test_leftover_check_sees_a_labelled_container(engine: Engine, run_id: str) -> None:
    with engine.container("busybox:latest", run_id, command=["true"]) as container:
        found = engine.leftovers(run_id)
        assert [(f.kind, f.name, f.run_id) for f in found] == [
            ("container", container.name, run_id)
        ]
        labels = engine.client.api.inspect_container(container.id)["Config"]["Labels"]
        assert labels[RUN_LABEL] == run_id
    assert engine.leftovers(run_id) == []


def test_container_is_removed_when_the_body_fails(engine: Engine, run_id: str) -> None:
    with pytest.raises(RuntimeError), engine.container("busybox:latest", run_id, command=["true"]):
        raise RuntimeError("boom")
    assert engine.leftovers(run_id) == []


def test_base_images_run(engine: Engine, run_id: str) -> None:
    status, out, _ = engine.run_to_exit("debian:bookworm", ["cat", "/etc/debian_version"], run_id)
    assert status == 0 and out.decode().startswith("12.")
    status, out, _ = engine.run_to_exit(
        "busybox:latest", ["sh", "-c", "wget --help >/dev/null 2>&1; echo $(id -u):ok"], run_id
    )
    assert (status, out.decode().strip()) == (0, "0:ok")


def test_fat_nginx_serves_the_index_page(engine: Engine, fat_nginx: str, run_id: str) -> None:
    expected = (REPO / "fixtures/nginx/index.html").read_bytes()
    with engine.container(fat_nginx, run_id, ports=[80]) as container:
        engine.start(container)
        host, port = engine.published_host, engine.published_port(container, 80)
        body = b""
        for _ in range(50):
            try:
                with urllib.request.urlopen(f"http://{host}:{port}/", timeout=2) as response:
                    assert response.status == 200
                    body = response.read()
                    break
            except OSError:
                assert engine.is_running(container), engine.logs(container)
                subprocess.run(["sleep", "0.2"], check=True)
        assert body == expected
    attrs = engine.image_attrs(fat_nginx)["Config"]
    assert attrs["Cmd"] == ["/opt/nginx/sbin/nginx", "-g", "daemon off;"]
    assert "80/tcp" in attrs["ExposedPorts"]


@pytest.mark.parametrize(
    ("script", "says"),
    [("engine.sh", "engine: running"), ("base-images.sh", "busybox:latest is present")],
)
def test_setup_scripts_are_idempotent(script: str, says: str) -> None:
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / script)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert says in result.stderr


def test_a_file_too_large_to_read_is_refused_at_once(engine: Engine, run_id: str) -> None:
    """The archive's header says the size: a file larger than the caller
    reads is refused before it is read, and the engine's stream is closed,
    so removing the container does not wait for the rest of it."""
    started = time.monotonic()
    with engine.container(
        "busybox:latest", run_id, command=["dd", "if=/dev/zero", "of=/big", "bs=1M", "count=256"]
    ) as container:
        engine.start(container)
        assert engine.wait(container, 60) == 0
        asked = time.monotonic()
        with pytest.raises(FileTooLarge) as refused:
            engine.get_file(container, "/big", 1 << 20)
        assert refused.value.size == 256 << 20
        assert time.monotonic() - asked < 5
        assert engine.get_file(container, "/no-such-file", 1 << 20) is None
    assert time.monotonic() - started < 60
    assert engine.leftovers(run_id) == []
