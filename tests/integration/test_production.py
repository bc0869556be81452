"""Production output (issue 14) on real images: layers by update risk shared
between two apps of one base, package records against dpkg itself, the
SBOM against the CycloneDX schema, --strip on nginx, and --init's reaping
and signals."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from click.testing import CliRunner
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from spdx_tools.spdx.parser.jsonlikedict.json_like_dict_parser import JsonLikeDictParser
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from slimmer.cli import cli
from slimmer.cli.base import default_cache_dir
from slimmer.compare import figures
from slimmer.engine import ContainerRef, Engine
from slimmer.errors import ExitCode
from slimmer.pid1 import WHEEL_INIT_PATH, find_wheel_init
from tests.conftest import session_tag
from tests.helpers.images import image_tree
from tests.helpers.schemas import assert_valid
from tests.helpers.serve import serve_and_get
from tests.integration.test_packages import stanzas

KIND_ORDER = ["os-base", "os-packages", "application", "configuration", "directories"]
LIBDIR = "/usr/lib/x86_64-linux-gnu"
LIBC_LAYER = f"os-base:libc6:amd64:{LIBDIR}/libc.so.6"
LOADER_LAYER = f"os-base:libc6:amd64:{LIBDIR}/ld-linux-x86-64.so.2"


@dataclass(frozen=True)
class Built:
    tag: str
    report: dict[str, Any]
    sbom: Path
    trace: Path
    output: str


class Builds:
    """Micro images this module builds (each once), removed at its end."""

    def __init__(self, engine: Engine, workdir: Path) -> None:
        self.engine = engine
        self.workdir = workdir
        self.traces: dict[str, Path] = {}
        self.made: dict[tuple[str, ...], Built] = {}

    def trace(self, image: str, *trace_args: str) -> Path:
        if image not in self.traces:
            path = self.workdir / f"{len(self.traces)}.trace.json"
            traced = CliRunner().invoke(
                cli, ["trace", image, "-o", str(path), "--quiet-app", *trace_args]
            )
            assert traced.exit_code == 0, traced.output
            self.traces[image] = path
        return self.traces[image]

    def build(self, image: str, *build_args: str, trace_args: tuple[str, ...] = ()) -> Built:
        key = (image, *build_args)
        if key not in self.made:
            trace = self.trace(image, *trace_args)
            tag = session_tag(f"production-{len(self.made)}:micro")
            report = self.workdir / f"{len(self.made)}.report.json"
            sbom = self.workdir / f"{len(self.made)}.sbom.json"
            argv = ["build", image, "-t", tag, "--trace", str(trace), "--report", str(report)]
            built = CliRunner().invoke(cli, [*argv, "--sbom", str(sbom), *build_args])
            assert built.exit_code == 0, built.output
            assert_valid("report", report.read_text())
            self.made[key] = Built(tag, json.loads(report.read_text()), sbom, trace, built.output)
        return self.made[key]

    def remove_all(self) -> None:
        for built in self.made.values():
            self.engine.remove_image(built.tag)


@pytest.fixture(scope="module")
def builds(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Builds]:
    made = Builds(engine, tmp_path_factory.mktemp("production"))
    yield made
    made.remove_all()


def engine_layers(engine: Engine, image: str) -> list[str]:
    return list(engine.image_attrs(image)["RootFS"]["Layers"])


# -- layers ---------------------------------------------------------------------------


def test_nginx_layers_by_update_risk(
    engine: Engine, builds: Builds, fat_nginx: str, run_id: str
) -> None:
    built = builds.build(fat_nginx, trace_args=("--http-probe", "/missing"))
    layers = built.report["layers"]
    kinds = [layer["kind"] for layer in layers]
    assert kinds == sorted(kinds, key=KIND_ORDER.index), "bottom up by update risk"
    assert set(kinds) == set(KIND_ORDER)
    names = [layer["name"] for layer in layers]
    assert names[:2] == [LOADER_LAYER, LIBC_LAYER]  # the foundation first
    assert f"os-packages:libssl3:amd64:{LIBDIR}/libcrypto.so.3" in names
    # the report names the engine's own layers, one per layer tar
    assert engine_layers(engine, built.tag) == [layer["diff_id"] for layer in layers]
    files = [f for f in built.report["files"] if f["kind"] == "file"]
    assert sum(layer["files"] for layer in layers) == len(files)
    application = next(layer for layer in layers if layer["kind"] == "application")
    assert application["file_bytes"] >= 4_000_000  # the unstripped nginx binary is the app's
    paths = ["/", "/missing"]
    fat = serve_and_get(engine, fat_nginx, 80, paths, run_id)
    assert serve_and_get(engine, built.tag, 80, paths, run_id) == fat
    # every directory shows the fat image's mtime (a directory listing shows
    # it), although the layers below hold them with mtime 0 to be shared
    assert layers[-1]["kind"] == "directories"
    fat_dirs = directory_mtimes(fat_nginx, "/opt/nginx")
    micro_dirs = directory_mtimes(built.tag, "/opt/nginx")
    assert set(micro_dirs) <= set(fat_dirs) and {"nginx/html", "nginx/logs"} <= set(micro_dirs)
    assert {name: fat_dirs[name] for name in micro_dirs} == micro_dirs
    assert min(micro_dirs.values()) > 0


def directory_mtimes(image: str, path: str) -> dict[str, int]:
    """The directories under `path` as `docker cp` copies them out of a
    container of the image (plain docker: what a user sees)."""
    created = subprocess.run(
        ["docker", "create", image, "none"], capture_output=True, text=True, check=True
    )
    container = created.stdout.strip()
    try:
        copied = subprocess.run(
            ["docker", "cp", f"{container}:{path}", "-"], capture_output=True, check=True
        ).stdout
    finally:
        subprocess.run(["docker", "rm", container], capture_output=True, check=False)
    with tarfile.open(fileobj=io.BytesIO(copied)) as tar:
        return {m.name.rstrip("/"): int(m.mtime) for m in tar.getmembers() if m.isdir()}


def test_two_apps_of_one_base_share_its_layers(
    engine: Engine, builds: Builds, fixture_image: Callable[[str], str]
) -> None:
    curl = builds.build(fixture_image("prodcurl"), trace_args=("--until-exit",))
    python = builds.build(fixture_image("prodpyjob"), trace_args=("--until-exit",))
    shared = set(engine_layers(engine, curl.tag)) & set(engine_layers(engine, python.tag))
    by_name = [{layer["name"]: layer for layer in b.report["layers"]} for b in (curl, python)]
    both = sorted(set(by_name[0]) & set(by_name[1]))
    for name in (LOADER_LAYER, LIBC_LAYER, f"os-packages:libssl3:amd64:{LIBDIR}/libcrypto.so.3"):
        assert name in both
    for name in both:
        if ":/" in name:  # a large file's own layer: the same file in both apps
            assert by_name[0][name]["diff_id"] == by_name[1][name]["diff_id"], name
            assert by_name[0][name]["diff_id"] in shared
    shared_bytes = sum(
        layer["size"] for layer in curl.report["layers"] if layer["diff_id"] in shared
    )
    assert shared_bytes > 6_000_000  # ld.so, libc, libcrypto: stored and pulled once


def test_contexts_are_deterministic(
    builds: Builds, fixture_image: Callable[[str], str], tmp_path: Path
) -> None:
    image = fixture_image("prodcurl")
    trace = builds.trace(image, "--until-exit")
    contexts = []
    for attempt in range(2):
        context = tmp_path / f"context{attempt}.tar"
        argv = ["build", image, "--trace", str(trace), "--context-only", str(context)]
        argv += ["--report", str(tmp_path / "r.json"), "--sbom", str(tmp_path / f"{attempt}.json")]
        done = CliRunner().invoke(cli, argv)
        assert done.exit_code == 0, done.output
        contexts.append(context.read_bytes())
    assert contexts[0] == contexts[1]
    assert (tmp_path / "0.json").read_bytes() == (tmp_path / "1.json").read_bytes()
    with tarfile.open(fileobj=io.BytesIO(contexts[0])) as tar:
        names = tar.getnames()
        dockerfile = tar.extractfile("Dockerfile").read().decode()  # type: ignore[union-attr]
    assert names[0] == "Dockerfile" and all(n.startswith("layer") for n in names[1:])
    adds = [line for line in dockerfile.splitlines() if line.startswith("ADD ")]
    assert adds == [f"ADD {name} /" for name in names[1:]]


def test_no_layers_no_records(
    builds: Builds, fixture_image: Callable[[str], str], tmp_path: Path
) -> None:
    image = fixture_image("prodcurl")
    trace = builds.trace(image, "--until-exit")
    context, report = tmp_path / "context.tar", tmp_path / "report.json"
    argv = ["build", image, "--trace", str(trace), "--context-only", str(context)]
    argv += ["--report", str(report), "--sbom", str(tmp_path / "sbom.json")]
    done = CliRunner().invoke(cli, [*argv, "--no-layers", "--no-package-records"])
    assert done.exit_code == 0, done.output
    with tarfile.open(context) as tar:
        assert tar.getnames() == ["Dockerfile", "rootfs.tar"]
    written = json.loads(report.read_text())
    assert [layer["kind"] for layer in written["layers"]] == ["image"]
    paths = {f["path"] for f in written["files"]}
    assert not any(p.startswith("/var/lib/dpkg") for p in paths)
    assert not any("release-file" in f["why"] for f in written["files"])
    assert written["packages"]["records"] is False and written["packages"]["kept"]


# -- packages scanners can see --------------------------------------------------------


def test_package_records_are_dpkgs_own(
    engine: Engine, builds: Builds, fixture_image: Callable[[str], str], run_id: str
) -> None:
    image = fixture_image("prodcurl")
    built = builds.build(image, trace_args=("--until-exit",))
    tree = image_tree(engine, built.tag, "/var/lib/dpkg/status.d", run_id)
    records = {
        name.removeprefix("status.d/"): data
        for name, data in tree.items()
        if data is not None and not name.endswith(".md5sums")
    }
    kept = {p["name"] for p in built.report["packages"]["kept"]}
    assert set(records) == kept and {"libc6", "libcurl4", "curl", "libssl3"} <= kept
    status, out, err = engine.run_to_exit(
        image, ["dpkg-query", "-s", *sorted(kept)], run_id, user="0", entrypoint=[]
    )
    assert status == 0, err.decode()
    truth = {key.split(":")[0]: fields for key, fields in stanzas(out.decode()).items()}
    kept_paths = {f["path"] for f in built.report["files"]}
    for name, data in records.items():
        ours = next(iter(stanzas(data.decode()).values()))
        theirs = dict(truth[name])
        conffiles = [
            line
            for line in theirs.pop("Conffiles", "").split("\n")
            if line.split() and line.split()[0] in kept_paths
        ]
        if conffiles:
            theirs["Conffiles"] = "\n".join(["", *conffiles])
        assert ours == theirs, name
    # the md5sums are those of the files in the micro image, as dpkg has them
    listed = {
        "/" + path: digest
        for name, data in tree.items()
        if name.endswith(".md5sums") and data is not None
        for digest, path in (line.split("  ", 1) for line in data.decode().splitlines())
    }
    assert "/usr/bin/curl" in listed
    status, out, err = engine.run_to_exit(
        image, ["md5sum", *sorted(listed)], run_id, user="0", entrypoint=[]
    )
    assert status == 0, err.decode()
    assert dict(reversed(line.split("  ", 1)) for line in out.decode().splitlines()) == listed
    release = image_tree(engine, built.tag, "/usr/lib/os-release", run_id)
    assert b"bookworm" in (release["os-release"] or b"")


def test_sbom_follows_the_cyclonedx_schema(
    engine: Engine, builds: Builds, fixture_image: Callable[[str], str], run_id: str
) -> None:
    image = fixture_image("prodcurl")
    built = builds.build(image, trace_args=("--until-exit",))
    text = built.sbom.read_text()
    assert JsonStrictValidator(SchemaVersion.V1_5).validate_str(text) is None
    document = json.loads(text)
    assert document["specVersion"] == "1.5"
    subject = document["metadata"]["component"]
    assert (subject["name"], subject["version"]) == (built.tag, engine.image_attrs(built.tag)["Id"])
    properties = {(p["name"], p["value"]) for p in subject["properties"]}
    assert ("slim:source:image", image) in properties
    assert document["metadata"]["tools"]["components"][0]["name"] == "slim"
    components = {c["bom-ref"]: c for c in document["components"]}
    purls = {c.get("purl", "") for c in components.values()}
    kept = built.report["packages"]["kept"]
    for package in kept:
        assert any(p.startswith(f"pkg:deb/debian/{package['name']}@") for p in purls)
    assert any("distro=debian-12" in p for p in purls)
    script = components["file:/usr/local/bin/fetch.sh"]
    status, out, _ = engine.run_to_exit(
        image, ["sha256sum", "/usr/local/bin/fetch.sh"], run_id, entrypoint=[]
    )
    assert status == 0
    assert script["hashes"][0] == {"alg": "SHA-256", "content": out.decode().split()[0]}
    assert built.report["sbom"] == str(built.sbom)


def test_the_sboms_of_nginx_name_the_micro_image_its_packages_and_nginx(
    engine: Engine, builds: Builds, fat_nginx: str, run_id: str, tmp_path: Path
) -> None:
    """Both formats, each checked by its own validator: about the micro
    image, the OS packages the fat image's dpkg knows at the same versions,
    and nginx itself (no package installed it), found as syft finds it."""
    built = builds.build(fat_nginx, trace_args=("--http-probe", "/missing"))
    micro_id = engine.image_attrs(built.tag)["Id"]
    spdx = tmp_path / "nginx.spdx.json"
    again = CliRunner().invoke(
        cli,
        ["build", fat_nginx, "-t", built.tag, "--trace", str(built.trace),
         "--report", str(tmp_path / "r.json"), "--sbom", str(spdx), "--sbom-format", "spdx"],
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    assert engine.image_attrs(built.tag)["Id"] == micro_id  # the same image again
    parsed = JsonLikeDictParser().parse(json.loads(spdx.read_text()))
    assert validate_full_spdx_document(parsed, "SPDX-2.3") == []
    document = json.loads(spdx.read_text())
    image = next(p for p in document["packages"] if p["SPDXID"] == "SPDXRef-Image")
    assert (image["name"], image["versionInfo"]) == (built.tag, micro_id)
    refs = {
        package["name"]: [r["referenceLocator"] for r in package.get("externalRefs", [])]
        for package in document["packages"]
    }
    nginx = refs["nginx"]
    assert "pkg:generic/nginx@1.22.1" in nginx
    assert "cpe:2.3:a:f5:nginx:1.22.1:*:*:*:*:*:*:*" in nginx
    versions = {
        name: locators[0].split("@", 1)[1].split("?")[0]
        for name, locators in refs.items()
        if locators and locators[0].startswith("pkg:deb/")
    }
    assert "libssl3" in versions and "libc6" in versions
    status, out, err = engine.run_to_exit(
        fat_nginx,
        ["dpkg-query", "-W", "-f", "${Package} ${Version}\\n", *sorted(versions)],
        run_id,
        entrypoint=[],
    )
    assert status == 0, err.decode()
    fat_versions = dict(line.split(" ", 1) for line in out.decode().splitlines())
    assert {name: unquote(v) for name, v in versions.items()} == fat_versions
    # the -dev packages and libc-bin keep only links (lib*.so, /usr/bin/ld.so): no
    # record of theirs, in the image or the SBOM; the report says where each went
    assert not [name for name in refs if name.endswith("-dev") or name == "libc-bin"]
    moved = {m["package"]: m for m in built.report["packages"]["links_only"]}
    assert moved["libssl-dev:amd64"]["recorded_under"] == "libssl3:amd64"
    assert moved["libc-bin:amd64"]["path"] == "/usr/bin/ld.so"
    records = image_tree(engine, built.tag, "/var/lib/dpkg/status.d", run_id)
    assert "status.d/libssl3" in records and not [n for n in records if "-dev" in n]
    cyclonedx = json.loads(built.sbom.read_text())
    (binary,) = [c for c in cyclonedx["components"] if c["type"] == "application"]
    assert binary["purl"] == "pkg:generic/nginx@1.22.1"
    occurrences = binary["evidence"]["occurrences"]
    assert occurrences == [{"location": "/opt/nginx/sbin/nginx"}]


def test_compare_counts_packages(
    engine: Engine, builds: Builds, fixture_image: Callable[[str], str]
) -> None:
    image = fixture_image("prodcurl")
    built = builds.build(image, trace_args=("--until-exit",))
    fat, micro = figures(engine, [image, built.tag], default_cache_dir(), True)
    kept = len(built.report["packages"]["kept"])
    assert micro.packages == kept and fat.packages is not None and fat.packages > kept


# -- --strip --------------------------------------------------------------------------


def test_strip_makes_nginx_smaller_and_it_answers_the_same(
    engine: Engine, builds: Builds, fat_nginx: str, run_id: str
) -> None:
    plain = builds.build(fat_nginx, trace_args=("--http-probe", "/missing"))
    stripped = builds.build(fat_nginx, "--strip", trace_args=("--http-probe", "/missing"))
    assert plain.report["sizes"]["micro"] > 13_000_000
    assert stripped.report["sizes"]["micro"] < 10_000_000
    strip = stripped.report["strip"]
    nginx = next(s for s in strip["stripped"] if s["path"] == "/opt/nginx/sbin/nginx")
    assert nginx["new_size"] < nginx["old_size"] // 2
    # Debian's libraries are listed with digests: never touched
    assert strip["protected"] > 0
    assert not any(s["path"].startswith(LIBDIR) for s in strip["stripped"])
    paths = ["/", "/missing", "/index.html"]
    assert serve_and_get(engine, stripped.tag, 80, paths, run_id) == serve_and_get(
        engine, fat_nginx, 80, paths, run_id
    )
    verified = CliRunner().invoke(
        cli, ["verify", fat_nginx, stripped.tag, "--trace", str(stripped.trace)]
    )
    assert verified.exit_code == 0, verified.output


# -- --init ---------------------------------------------------------------------------

ZOMBIES = (
    "import os\n"
    "states = []\n"
    "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
    "    try:\n"
    "        with open(f'/proc/{pid}/stat') as handle:\n"
    "            states.append(handle.read().rsplit(')', 1)[1].split()[0])\n"
    "    except OSError:\n"
    "        pass\n"
    "print(states.count('Z'))\n"
)


def wait_for_log(engine: Engine, container: ContainerRef, text: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while True:
        logs = engine.logs(container).decode()
        if text in logs:
            return logs
        assert time.monotonic() < deadline, f"no {text!r} in:\n{logs}"
        time.sleep(0.05)


def zombies(engine: Engine, container: ContainerRef) -> int:
    """Zombie processes in the container, counted from inside it (the
    micro image's own python3; zombies are not in the container's cgroup)."""
    result = engine.exec_run(container, ["python3", "-c", ZOMBIES], "0", 30)
    assert result.exit_code == 0, result.stderr.decode()
    return int(result.stdout.decode())


def test_init_reaps_orphans_and_passes_signals(
    engine: Engine, builds: Builds, fixture_image: Callable[[str], str], run_id: str
) -> None:
    image = fixture_image("prodinit")
    without = builds.build(image)
    built = builds.build(image, "--init")
    assert built.report["init"] == {
        "source": "dumb-init-wheel",
        "path": WHEEL_INIT_PATH,
        "passed_over": [],
    }
    config = engine.image_attrs(built.tag)["Config"]
    assert config["Entrypoint"] == [WHEEL_INIT_PATH, "--"]
    assert config["Cmd"] == ["python3", "/opt/service/service.py"]

    # the test can fail: without an init, python3 is PID 1 and reaps nothing
    with engine.container(without.tag, run_id) as container:
        engine.start(container)
        wait_for_log(engine, container, "ready, pid 1")
        time.sleep(1)
        assert zombies(engine, container) == 3

    with engine.container(built.tag, run_id) as container:
        engine.start(container)
        wait_for_log(engine, container, "ready")
        time.sleep(1)
        assert zombies(engine, container) == 0
        for number, name in ((signal.SIGHUP, "SIGHUP"), (signal.SIGINT, "SIGINT")):
            engine.kill(container, number)
            wait_for_log(engine, container, f"got {name}")
        assert engine.is_running(container)
        started = time.monotonic()
        engine.client.api.stop(container.id, timeout=10)
        assert time.monotonic() - started < 5, "docker stop waited for SIGKILL"
        assert engine.wait(container, 10) == 7  # the app's own status
        assert "got SIGTERM" in engine.logs(container).decode()


def test_the_images_own_init_comes_first(
    engine: Engine,
    builds: Builds,
    fixture_image: Callable[[str], str],
    image_from: Callable[[dict[str, str | bytes]], str],
) -> None:
    fixture_image("prodinit")
    wheel = find_wheel_init()
    assert wheel is not None
    image = image_from(
        {
            "Dockerfile": "FROM slim-fixture-prodinit:latest\nCOPY dumb-init /usr/bin/dumb-init\n",
            "dumb-init": wheel.read_bytes(),
        }
    )
    built = builds.build(image, "--init")
    assert built.report["init"] == {
        "source": "image",
        "path": "/usr/bin/dumb-init",
        "passed_over": [],
    }
    assert engine.image_attrs(built.tag)["Config"]["Entrypoint"] == ["/usr/bin/dumb-init", "--"]
    assert not any(f["path"].startswith("/usr/libexec/slim") for f in built.report["files"])


def test_init_is_refused_where_the_wheel_cannot_run(
    builds: Builds, fixture_image: Callable[[str], str], tmp_path: Path
) -> None:
    image = fixture_image("init")  # busybox: static, no glibc loader
    trace = builds.trace(image)
    done = CliRunner().invoke(
        cli,
        ["build", image, "-t", session_tag("never:micro"), "--trace", str(trace), "--init",
         "--report", str(tmp_path / "r.json")],
    )  # fmt: skip
    assert done.exit_code == ExitCode.NOT_FOUND, done.output
    assert "/lib64/ld-linux-x86-64.so.2" in done.output
    assert "the image's own tini or dumb-init is used when it has one" in done.output
