"""README.md's commands, typed from a clean checkout: `make demo` (which
types the tour's first block), then each block of the tour line by line;
every micro image is then checked with plain `docker`: the same answers as
the fat image, the health status the engine gives it, its exit code."""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import FAT_NGINX, REPO
from tests.journeys.conftest import Checkout, docker

pytestmark = pytest.mark.usefixtures("made_images")

JOURNEY = re.compile(r"<!-- journey: (?P<name>[a-z-]+) -->\n```sh\n(?P<body>.*?)\n```", re.DOTALL)
# The image names the tour gives, renamed with the run's prefix; nginx-build
# (the demo's fat image) is shared and only read.
TOUR_NAMES = ("nginx:micro", "nginx_micro", "shop-db", "report-job", "health-web")


def journeys(readme: Path = REPO / "README.md") -> dict[str, list[str]]:
    """The tour's blocks: name -> the lines a user types."""
    return {
        found["name"]: [line for line in found["body"].splitlines() if line.strip()]
        for found in JOURNEY.finditer(readme.read_text(encoding="utf-8"))
    }


def renamed(line: str, prefix: str) -> str:
    for name in TOUR_NAMES:
        line = re.sub(rf"(?<![\w.-]){re.escape(name)}", prefix + name, line)
    return line


def type_block(checkout: Checkout, name: str) -> list[subprocess.CompletedProcess[str]]:
    """Type a block's lines one after the other; each must succeed."""
    done = []
    for line in journeys()[name]:
        result = checkout.run(renamed(line, checkout.prefix))
        assert result.returncode == 0, f"$ {line}\n-> exit {result.returncode}\n{result.stderr}"
        done.append(result)
    return done


@contextmanager
def running(image: str, *args: str) -> Iterator[str]:
    """`docker run -d` with every exposed port published on 127.0.0.1."""
    started = docker("run", "-d", "-P", *args, image)
    assert started.returncode == 0, started.stderr
    container = started.stdout.strip()
    try:
        yield container
    finally:
        docker("rm", "--force", "--volumes", container)


def host_port(container: str, port: int) -> int:
    found = docker("port", container, f"{port}/tcp").stdout.split()
    return int(found[0].rsplit(":", 1)[1])


def http_get(port: int, path: str, timeout: float = 20) -> tuple[int, bytes]:
    """GET once the server answers (any status)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
        finally:
            connection.close()


def health(container: str, timeout: float = 40) -> str:
    """The engine's health status once it is healthy or unhealthy."""
    deadline = time.monotonic() + timeout
    while True:
        status = docker("inspect", "-f", "{{.State.Health.Status}}", container).stdout.strip()
        if status in ("healthy", "unhealthy") or time.monotonic() > deadline:
            return status
        time.sleep(0.5)


def test_the_tour_is_what_the_suite_types() -> None:
    """Every block of the tour has its journey here, and no journey lacks
    its block: the README cannot show a command nobody typed."""
    assert set(journeys()) == {"demo", "tcp", "job", "health"}


def test_make_demo_types_the_demo_block(demo: subprocess.CompletedProcess[str], checkout) -> None:
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-5000:]
    typed = [line[2:] for line in demo.stderr.splitlines() if line.startswith("$ ")]
    wanted = [renamed(line, checkout.prefix) for line in journeys()["demo"]]
    assert typed == wanted
    assert "answers like" in demo.stderr
    micro = f"{checkout.prefix}nginx:micro"
    with running(FAT_NGINX) as fat_run, running(micro) as micro_run:
        for path in ("/", "/missing", "/50x.html"):
            fat = http_get(host_port(fat_run, 80), path)
            assert http_get(host_port(micro_run, 80), path) == fat, path
    size = int(docker("image", "inspect", "-f", "{{.Size}}", micro).stdout)
    assert size < 20_000_000
    layout = checkout.root / ".slim" / "nginx-micro.oci"
    inspected = subprocess.run(
        ["skopeo", "inspect", f"oci:{layout}:{micro}"], capture_output=True, text=True, check=False
    )
    assert inspected.returncode == 0, inspected.stderr
    layers = docker("image", "inspect", "-f", "{{json .RootFS.Layers}}", micro).stdout
    assert json.loads(inspected.stdout)["Layers"] == json.loads(layers)


def test_a_tcp_service_probed_by_its_client_and_from_the_host(demo, checkout: Checkout) -> None:
    assert demo.returncode == 0
    trace, _, verify = type_block(checkout, "tcp")[1:]
    assert "probe host python3 fixtures/pgservice/ask.py: exit 0" in trace.stderr
    assert "probe client psql" in verify.stderr and "answers like" in verify.stderr
    fat, micro = (f"{checkout.prefix}shop-db:{tag}" for tag in ("fat", "micro"))
    query = "select name, price from items order by id"
    with running(micro) as server:
        port = host_port(server, 5432)
        asked = checkout.run(f"SLIM_TARGET_PORT={port} python3 fixtures/pgservice/ask.py")
        waited = time.monotonic()
        while asked.returncode != 0 and time.monotonic() - waited < 30:
            time.sleep(0.5)
            asked = checkout.run(f"SLIM_TARGET_PORT={port} python3 fixtures/pgservice/ask.py")
        assert asked.returncode == 0, asked.stderr
        assert asked.stdout == "total: 10.45\n"
        client = docker(
            "run", "--rm", "--network", f"container:{server}", fat,
            "psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "shop", "-tAc", query,
        )  # fmt: skip
        assert client.returncode == 0, client.stderr
        assert client.stdout.split() == ["tea|3.50", "coffee|4.20", "cake|2.75"]


def test_a_batch_job(demo, checkout: Checkout) -> None:
    assert demo.returncode == 0
    verify = type_block(checkout, "job")[-1]
    assert "answers like" in verify.stderr
    fat, micro = (f"{checkout.prefix}report-job:{tag}" for tag in ("fat", "micro"))
    fat_run, micro_run = docker("run", "--rm", fat), docker("run", "--rm", micro)
    assert (micro_run.returncode, micro_run.stdout) == (0, fat_run.stdout)
    assert fat_run.returncode == 0 and "weekday" in fat_run.stdout


def test_a_shell_healthcheck_is_healthy_in_the_micro_image(demo, checkout: Checkout) -> None:
    assert demo.returncode == 0
    (build,) = type_block(checkout, "health")[1:]
    assert "answers like" in build.stderr
    micro = f"{checkout.prefix}health-web:micro"
    config = json.loads(docker("image", "inspect", "-f", "{{json .Config}}", micro).stdout)
    assert config["Healthcheck"]["Test"][0] == "CMD-SHELL" and config["Shell"][0] == "/bin/ash"
    with running(micro) as web:
        assert health(web) == "healthy"
        assert http_get(host_port(web, 8080), "/")[0] == 200
