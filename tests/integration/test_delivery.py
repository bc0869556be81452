"""Where a micro image goes: pushed to a real registry (each -t), written
as an OCI layout and a docker-archive without a registry, its id on stdout
and in --iidfile; read back with skopeo, docker pull and docker load."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from slimmer.engine import Engine
from slimmer.errors import ExitCode
from tests.helpers.registry import local_registry
from tests.helpers.serve import serve_and_get
from tests.helpers.slimrun import run_slim


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with local_registry(tmp_path_factory.mktemp("registry")) as address:
        yield address


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture
def names(engine: Engine) -> Iterator[list[str]]:
    """Image names a test makes, removed at its end."""
    made: list[str] = []
    yield made
    for name in made:
        engine.remove_image(name)


def test_push_every_tag_and_pull_it_back(
    engine: Engine, fixture_image, registry: str, names: list[str], tmp_path: Path, run_id: str
) -> None:
    image = fixture_image("healthuser")
    repository = f"{registry}/slim-test/health-{uuid.uuid4().hex[:8]}"
    tags = [f"{repository}:one", f"{repository}:two"]
    names.extend(tags)
    sbom = tmp_path / "sbom.json"
    built = run_slim(
        "build", image, "-t", tags[0], "-t", tags[1], "--push", "--sbom", str(sbom),
        "--report", str(tmp_path / "r.json"), cwd=tmp_path,
    )  # fmt: skip
    assert built.exit_code == 0, built.describe()
    micro_id = engine.image_attrs(tags[0])["Id"]
    assert built.stdout == f"{micro_id}\n"  # the one line on stdout
    inspected = json.loads(
        run("skopeo", "inspect", "--tls-verify=false", f"docker://{tags[1]}").stdout
    )
    digest = inspected["Digest"]
    assert f"pushed: {repository}@{digest}" in built.stderr
    subject = json.loads(sbom.read_text())["metadata"]["component"]
    assert subject["version"] == micro_id
    assert f"{repository}@{digest}" in {p["value"] for p in subject["properties"]}
    assert subject["purl"].startswith("pkg:oci/") and digest in subject["purl"]
    for tag in tags:
        engine.remove_image(tag)
    pulled = run("docker", "pull", "-q", tags[1])
    assert pulled.returncode == 0, pulled.stderr
    assert engine.image_attrs(tags[1])["Id"] == micro_id
    page = (Path(__file__).parents[2] / "fixtures/healthuser/www/index.html").read_bytes()
    assert serve_and_get(engine, tags[1], 8080, ["/"], run_id) == [(200, page)]


def test_an_oci_layout_and_a_docker_archive_without_a_registry(
    engine: Engine, fixture_image, names: list[str], tmp_path: Path
) -> None:
    image = fixture_image("healthuser")
    tag = f"slim-test-delivery-{uuid.uuid4().hex[:8]}:micro"
    names.append(tag)
    layout, archive, iid = tmp_path / "oci", tmp_path / "micro.tar", tmp_path / "iid"
    built = run_slim(
        "build", image, "-t", tag, "--output", f"oci:{layout}",
        "--output", f"docker-archive:{archive}", "--iidfile", str(iid),
        "--report", str(tmp_path / "r.json"), cwd=tmp_path,
    )  # fmt: skip
    assert built.exit_code == 0, built.describe()
    attrs = engine.image_attrs(tag)
    assert iid.read_text() == f"{attrs['Id']}\n" and built.stdout == iid.read_text()
    inspected = run("skopeo", "inspect", f"oci:{layout}:{tag}")
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["Layers"] == attrs["RootFS"]["Layers"]  # uncompressed
    config = json.loads(run("skopeo", "inspect", "--config", f"oci:{layout}:{tag}").stdout)
    assert config["config"]["Cmd"] == ["httpd", "-f", "-v", "-p", "8080", "-h", "/srv/www"]
    copied = f"slim-test-delivery-{uuid.uuid4().hex[:8]}:from-oci"
    names.append(copied)
    result = run("skopeo", "copy", f"oci:{layout}:{tag}", f"docker-daemon:{copied}")
    assert result.returncode == 0, result.stderr
    assert engine.image_attrs(copied)["RootFS"]["Layers"] == attrs["RootFS"]["Layers"]
    engine.remove_image(tag)
    loaded = run("docker", "load", "-i", str(archive))
    assert loaded.returncode == 0 and tag in loaded.stdout, loaded.stderr
    assert engine.image_attrs(tag)["Id"] == attrs["Id"]
    as_archive = run("skopeo", "inspect", f"docker-archive:{archive}")
    assert json.loads(as_archive.stdout)["Layers"] == attrs["RootFS"]["Layers"]


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--output", "zip:/tmp/x"], ExitCode.USAGE, "unknown kind 'zip'"),
        (["--output", "oci"], ExitCode.USAGE, "is not KIND:PATH"),
        (
            ["--output", "docker-archive:/no/such/dir/x.tar"],
            ExitCode.NOT_FOUND,
            "the directory /no/such/dir does not exist",
        ),
        (["--output", "oci:/no/such/dir/layout"], ExitCode.USAGE, "cannot write in /no/such/dir"),
        (["--push", "--context-only", "ctx.tar"], ExitCode.USAGE, "--context-only does not build"),
    ],
)
def test_outputs_are_checked_before_anything_runs(
    fixture_image, tmp_path: Path, extra: list[str], code: ExitCode, message: str
) -> None:
    result = run_slim("build", fixture_image("static"), "-t", "x:y", *extra, cwd=tmp_path)
    assert result.exit_code == code, result.describe()
    assert message in result.stderr
    assert not (tmp_path / ".slim").exists()
