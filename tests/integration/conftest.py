from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from slimmer.cli import cli
from slimmer.engine import Engine
from tests.conftest import FIXTURE_LABEL, SESSION_PREFIX, leftover_keys
from tests.helpers.images import context_of


@pytest.fixture(autouse=True)
def _integration_needs_engine_and_cleans_up(no_leftovers: None) -> None:
    """Every integration test talks to a real engine and leaves nothing."""


@pytest.fixture(scope="session", autouse=True)
def _session_leaves_nothing(engine: Engine) -> Iterator[None]:
    """At the end of the session, no container, volume or image labelled
    io.slim.run that this session made may remain; other runs' are not
    touched."""
    before = leftover_keys(engine.leftovers(prefix=SESSION_PREFIX))
    yield
    mine = engine.leftovers(prefix=SESSION_PREFIX)
    remaining = [item for item in mine if (item.kind, item.name) not in before]
    engine.remove_leftovers(prefix=SESSION_PREFIX)
    if remaining:
        pytest.fail(f"the test session left these on the engine: {remaining}", pytrace=False)


@pytest.fixture
def image_from(engine: Engine, tmp_path: Path) -> Iterator[Callable[[dict[str, str | bytes]], str]]:
    """Build an image from files a test writes (a Dockerfile among them);
    removed when the test ends."""
    made: list[str] = []

    def build(files: dict[str, str | bytes]) -> str:
        directory = tmp_path / f"ctx-{len(made)}"
        for name, content in files.items():
            path = directory / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
            path.chmod(0o755)
        tag = f"slim-test-image-{uuid.uuid4().hex[:8]}:latest"
        engine.build(context_of(directory), tag, labels={FIXTURE_LABEL: "in-test"})
        made.append(tag)
        return tag

    yield build
    for tag in made:
        engine.remove_image(tag)


@pytest.fixture
def micro_tags(engine: Engine) -> Iterator[Callable[[], str]]:
    """New tags for the micro images a test builds; removed when it ends."""
    made: list[str] = []

    def new() -> str:
        made.append(f"slim-test-micro-{uuid.uuid4().hex[:8]}:micro")
        return made[-1]

    yield new
    for tag in made:
        engine.remove_image(tag)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 kB tmpfs (mounting needs root)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.fixture
def static_program_image(image_from, tmp_path: Path) -> Callable[..., str]:
    """An image of busybox and one C program, compiled here with gcc
    -static, at /NAME; its CMD runs it with `args`. Removed at the end."""

    def build(name: str, source: str, *args: str) -> str:
        (tmp_path / f"{name}.c").write_text(source)
        binary = tmp_path / name
        compile_command = ["gcc", "-static", "-O1", "-o", str(binary), str(tmp_path / f"{name}.c")]
        subprocess.run(compile_command, check=True)
        command = json.dumps([f"/{name}", *args])
        dockerfile = f"FROM busybox:latest\nCOPY {name} /{name}\nCMD {command}\n"
        return image_from({name: binary.read_bytes(), "Dockerfile": dockerfile})

    return build


Micro = Callable[..., tuple[str, dict]]


def report_path(tmp_path: Path, image: str) -> Path:
    """Where the `micro` fixture writes the build report of an image."""
    return tmp_path / f"{image.split(':')[0].replace('/', '-')}.report.json"


@pytest.fixture
def micro(engine: Engine, tmp_path: Path) -> Iterator[Micro]:
    """trace + build with the CLI; the micro image is removed afterwards.
    `make(image, *trace_args, build_args=())` returns the tag and the report."""
    made: list[str] = []

    def make(image: str, *trace_args: str, build_args: tuple[str, ...] = ()) -> tuple[str, dict]:
        name = image.split(":")[0].replace("/", "-")
        tag = f"{name}:micro"
        trace, report = tmp_path / f"{name}.trace.json", report_path(tmp_path, image)
        runner = CliRunner()
        traced = runner.invoke(cli, ["trace", image, "-o", str(trace), "--quiet-app", *trace_args])
        assert traced.exit_code == 0, traced.output
        build = ["build", image, "-t", tag, "--trace", str(trace), "--report", str(report)]
        built = runner.invoke(cli, [*build, *build_args])
        assert built.exit_code == 0, built.output
        made.append(tag)
        return tag, json.loads(report.read_text())

    yield make
    for tag in made:
        engine.remove_image(tag)
