"""`slim build` that traces first collects in the container it traced in
when the app changed nothing the image has: one container started, and the
same context, byte for byte, as a collect in a fresh container gives. An app
that edits a file of the image gets its collect in a fresh container."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from slimmer.engine import RUN_LABEL, Engine
from tests.conftest import SESSION_PREFIX
from tests.helpers.slimrun import SlimRun, run_slim

pytestmark = pytest.mark.integration


def started_containers(engine: Engine, prefix: str, since: float) -> list[str]:
    """The containers of runs with this prefix the engine started since then."""
    events = engine.client.api.events(
        since=int(since),
        until=int(time.time()) + 1,
        decode=True,
        filters={"type": "container", "event": "start", "label": RUN_LABEL},
    )
    return [
        event["Actor"]["Attributes"].get("name", event["id"])
        for event in events
        if event["Actor"]["Attributes"].get(RUN_LABEL, "").startswith(prefix)
    ]


def build(image: str, work: Path, prefix: str, *args: str) -> SlimRun:
    ran = run_slim("build", image, *args, env={"SLIM_RUN_PREFIX": prefix}, cwd=work)
    assert ran.exit_code == 0, ran.describe()
    return ran


@pytest.mark.usefixtures("no_leftovers")
@pytest.mark.parametrize(
    ("fixture", "trace_args"),
    [("nginx", ()), ("shelljob", ("--until-exit",))],
)
def test_a_build_that_traces_starts_one_container(
    engine: Engine,
    fat_nginx: str,
    fixture_image: Callable[[str], str],
    tmp_path: Path,
    fixture: str,
    trace_args: tuple[str, ...],
) -> None:
    image = fat_nginx if fixture == "nginx" else fixture_image(fixture)
    prefix = f"{SESSION_PREFIX}one{uuid.uuid4().hex[:6]}-"
    since = time.time() - 1
    one = tmp_path / "one.tar"
    ran = build(image, tmp_path, prefix, "--retrace", "--context-only", str(one), *trace_args)
    assert len(started_containers(engine, prefix, since)) == 1, ran.describe()
    assert "collecting files in the traced container" in ran.stderr
    trace = next((tmp_path / ".slim").glob("*.trace.json"))
    fresh = tmp_path / "fresh.tar"
    build(image, tmp_path, prefix, "--trace", str(trace), "--context-only", str(fresh))
    assert one.read_bytes() == fresh.read_bytes()


@pytest.mark.usefixtures("no_leftovers")
def test_an_app_that_edits_an_image_file_is_collected_in_a_fresh_container(
    engine: Engine, fixture_image: Callable[[str], str], tmp_path: Path
) -> None:
    image = fixture_image("editjob")
    prefix = f"{SESSION_PREFIX}two{uuid.uuid4().hex[:6]}-"
    since = time.time() - 1
    two = tmp_path / "two.tar"
    ran = build(image, tmp_path, prefix, "--until-exit", "--context-only", str(two))
    assert len(started_containers(engine, prefix, since)) == 2, ran.describe()
    assert "the app changed /etc/app.conf" in ran.stderr
    trace = next((tmp_path / ".slim").glob("*.trace.json"))
    fresh = tmp_path / "fresh.tar"
    build(image, tmp_path, prefix, "--trace", str(trace), "--context-only", str(fresh))
    assert two.read_bytes() == fresh.read_bytes()


@pytest.mark.engine_lane
@pytest.mark.usefixtures("no_leftovers")
def test_one_container_on_every_engine(fixture_image: Callable[[str], str], tmp_path: Path) -> None:
    """On Docker and on rootful and rootless Podman: a web server with a
    HEALTHCHECK and a non-root USER is collected where it was traced, and
    the context is the one a fresh container gives."""
    image = fixture_image("healthuser")
    one, fresh = tmp_path / "one.tar", tmp_path / "fresh.tar"
    ran = build(image, tmp_path, SESSION_PREFIX, "--retrace", "--context-only", str(one))
    assert "collecting files in the traced container" in ran.stderr, ran.describe()
    trace = next((tmp_path / ".slim").glob("*.trace.json"))
    build(image, tmp_path, SESSION_PREFIX, "--trace", str(trace), "--context-only", str(fresh))
    assert one.read_bytes() == fresh.read_bytes()
