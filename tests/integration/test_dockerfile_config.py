"""A hostile fat image's config cannot reach the builder as syntax.

The images are made with any config (tests/helpers/hostile.py) and go
through the real `slim build` or the real builder; the micro image must have
exactly the fat image's config, or slim refuses the image with a one-line
error naming the field (exit status 3)."""

from __future__ import annotations

import io
import json
import tarfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from slimmer.cli import cli
from slimmer.context import write_context
from slimmer.dockerfile import DockerfileError, go_space, render_dockerfile
from slimmer.engine import Engine
from slimmer.errors import ExitCode
from slimmer.trace import ImageConfig, Trace
from tests.helpers.hostile import ImageMaker, LayerFile, image_layers, image_maker, layer_tar

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SECRET = b"another image's secret\n"


@pytest.fixture(scope="module")
def busybox_layers(engine: Engine) -> list[bytes]:
    return image_layers(engine, "busybox:latest")


@pytest.fixture
def images(engine: Engine) -> Iterator[ImageMaker]:
    yield from image_maker(engine)


@pytest.fixture
def victim(images: ImageMaker) -> str:
    """A second local image with a file the hostile image wants."""
    tag = f"slim-test-victim-{images.run_id}:latest"
    images.load(tag, {"Cmd": ["true"]}, [layer_tar({"secret": LayerFile(SECRET)})])
    return tag


@dataclass
class Loopback:
    """An HTTP server on the host's loopback that records every request."""

    url: str
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def loopback() -> Iterator[Loopback]:
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"fetched from the host's loopback\n")

        do_HEAD = do_GET

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Loopback(f"http://127.0.0.1:{server.server_port}", seen)
    finally:
        server.shutdown()
        server.server_close()


def file_in_image(engine: Engine, image: str, path: str) -> bytes | None:
    with engine.container(image, engine.new_run_id(), command=["x"]) as container:
        return engine.get_file(container, path, 1 << 20)


def one_line_refusal(output: str, field_name: str) -> None:
    errors = [line for line in output.splitlines() if line.startswith("slim: error:")]
    assert len(errors) == 1 and field_name in errors[0], output
    assert "slim: hint:" in output


def test_a_newline_in_workdir_copies_nothing_from_another_image(
    engine: Engine,
    images: ImageMaker,
    busybox_layers: list[bytes],
    victim: str,
    loopback: Loopback,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The issue's attack, through the whole `slim build` (trace first)."""
    workdir = f"/srv\nCOPY --from={victim} /secret /stolen\nADD {loopback.url}/x /fetched"
    fat = f"slim-test-hostile-{images.run_id}:fat"
    images.load(fat, {"Cmd": ["true"], "WorkingDir": workdir}, busybox_layers)
    micro = images.track(f"slim-test-hostile-{images.run_id}:micro")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["build", fat, "-t", micro, "--until-exit"])
    assert result.exit_code == 0, result.output
    assert engine.image_attrs(micro)["Config"]["WorkingDir"] == workdir
    assert file_in_image(engine, micro, "/stolen") is None
    assert file_in_image(engine, micro, "/fetched") is None
    assert loopback.requests == []


@dataclass(frozen=True)
class Attack:
    name: str
    config: Callable[[str, str], dict[str, Any]]  # (victim, url) -> the fat image's config
    carried: str | None  # the Config key that must come out equal
    refused: str = ""  # else: the field the refusal names


COPY = "COPY --from={victim} /secret /stolen"
ADD = "ADD {url}/{name} /fetched"

ATTACKS = [
    Attack("user", lambda v, u: {"User": f"root\n{ADD.format(url=u, name='user')}"}, "User"),
    Attack(
        "env name",
        lambda v, u: {"Env": ["PATH=/bin", f"X\n{ADD.format(url=u, name='env')}=1"]},
        "Env",
    ),
    Attack(
        "env value",
        lambda v, u: {"Env": ["PATH=/bin", f"X=1\n{COPY.format(victim=v)}"]},
        "Env",
    ),
    Attack(
        "labels",
        lambda v, u: {
            "Labels": {
                f"a\n{ADD.format(url=u, name='label')}": "x",
                "b": f"1\n{COPY.format(victim=v)}",
                'c" \\': "$HOME ${x}\\",
            }
        },
        "Labels",
    ),
    Attack(
        "volume",
        lambda v, u: {"Volumes": {f"/v\n{COPY.format(victim=v)}": {}, '/w"$x\\': {}}},
        "Volumes",
    ),
    Attack(
        "stop signal",
        lambda v, u: {"StopSignal": f"SIGTERM\n{ADD.format(url=u, name='signal')}"},
        None,
        "STOPSIGNAL",
    ),
    Attack(
        "exposed port",
        lambda v, u: {"ExposedPorts": {f"80/tcp\n{ADD.format(url=u, name='port')}": {}}},
        None,
        "EXPOSE",
    ),
    Attack(
        "healthcheck",
        lambda v, u: {
            "Healthcheck": {"Test": ["CMD-SHELL", f"true\n{ADD.format(url=u, name='health')}"]}
        },
        None,
        "HEALTHCHECK",
    ),
    Attack(
        "healthcheck continuation",
        lambda v, u: {"Healthcheck": {"Test": ["CMD-SHELL", "true \\"]}},
        None,
        "HEALTHCHECK",
    ),
]


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda attack: attack.name)
def test_hostile_config_is_carried_exactly_or_refused(
    engine: Engine,
    images: ImageMaker,
    busybox_layers: list[bytes],
    victim: str,
    loopback: Loopback,
    tmp_path: Path,
    attack: Attack,
) -> None:
    fat = f"slim-test-hostile-{images.run_id}:fat"
    fat_id = images.load(
        fat, {"Cmd": ["true"], **attack.config(victim, loopback.url)}, busybox_layers
    )
    fat_config = engine.image_attrs(fat)["Config"]
    trace = tmp_path / "t.json"  # a trace is data: this one says the app ran `true`
    Trace(
        image=fat,
        image_id=fat_id,
        config=ImageConfig.from_inspect({"Config": fat_config}),
        command=("true",),
        user="",
        files=(),
        exit_status=0,
        until_exit=True,
    ).save(trace)
    micro = images.track(f"slim-test-hostile-{images.run_id}:micro")
    report = tmp_path / "r.json"
    result = CliRunner().invoke(
        cli, ["build", fat, "-t", micro, "--trace", str(trace), "--report", str(report)]
    )
    assert loopback.requests == []
    if attack.carried is None:
        assert result.exit_code == ExitCode.ERROR, result.output
        one_line_refusal(result.output, attack.refused)
        assert not engine.image_exists(micro)
        return
    assert result.exit_code == 0, result.output
    micro_config = engine.image_attrs(micro)["Config"]
    if attack.carried == "Labels":
        assert fat_config["Labels"].items() <= micro_config["Labels"].items()
    else:
        assert micro_config[attack.carried] == fat_config[attack.carried]
    assert file_in_image(engine, micro, "/stolen") is None
    assert file_in_image(engine, micro, "/fetched") is None


def test_context_only_refuses_what_only_the_engine_can_carry(
    engine: Engine, images: ImageMaker, busybox_layers: list[bytes], tmp_path: Path
) -> None:
    fat = f"slim-test-hostile-{images.run_id}:fat"
    fat_id = images.load(fat, {"Cmd": ["true"], "WorkingDir": "/a\nb"}, busybox_layers)
    trace = tmp_path / "t.json"
    Trace(
        image=fat,
        image_id=fat_id,
        config=ImageConfig.from_inspect(engine.image_attrs(fat)),
        command=("true",),
        user="",
        files=(),
        until_exit=True,
    ).save(trace)
    target = tmp_path / "context.tar"
    result = CliRunner().invoke(
        cli, ["build", fat, "--trace", str(trace), "--context-only", str(target)]
    )
    assert result.exit_code == ExitCode.ERROR, result.output
    one_line_refusal(result.output, "WORKDIR")
    assert "--context-only" in result.output and not target.exists()


# -- the property: any config, through the real builder --------------------

# Pieces that mean something to the Dockerfile parser, its lexer, JSON,
# Go's text handling or a shell; and raw bytes that are not UTF-8.
SPECIAL = [
    "\n", "\\", "\\\n", "\\ ", '"', "'", "$", "${x}", "$x", "${x:-y}", "#", "# escape=`", "\0",
    " ", "\t", "\r", "\v", "=", "\xa0", "\u2028", "\x85", "\ufeff", "[", '["a"]', "]", "--x",
    "`", "\ufffd", "é", "😀", "\udce9", "\udcff", "ADD http://127.0.0.1:9/x /y", "COPY a b",
]  # fmt: skip
NO_NEWLINE = [piece for piece in SPECIAL if "\n" not in piece]


def text_from(pieces: list[str], max_pieces: int = 6) -> st.SearchStrategy[str]:
    piece = st.one_of(st.sampled_from(pieces), st.text(max_size=4))
    return st.lists(piece, max_size=max_pieces).map("".join)


# Longer than FOLD_AT, so long lines are folded; rare. Values over the
# parser's 64 KiB line limit cost the 20.10 builder seconds each (it builds
# words by string concatenation): test_values_longer_than_a_line covers them.
folded_text = st.tuples(st.sampled_from(NO_NEWLINE), st.integers(4_500, 6_000)).map(
    lambda pair: pair[0] * (pair[1] // len(pair[0].encode("utf-8", "surrogateescape")))
)
hostile_text = st.integers(0, 9).flatmap(lambda n: folded_text if n == 0 else text_from(SPECIAL))
short_hostile = text_from(SPECIAL, 4).filter(
    lambda text: len(text.encode("utf-8", "surrogateescape")) < 200
)


@dataclass(frozen=True)
class Example:
    config: dict[str, Any]
    refused_because: str | None  # the spec says slim must refuse (see slimmer/dockerfile.py)


def pick(
    draw: Any, valid: st.SearchStrategy[Any], invalid: st.SearchStrategy[Any]
) -> tuple[Any, bool]:
    if draw(st.integers(0, 14)) == 0:
        return draw(invalid), True
    return draw(valid), False


SIGNAL_NAMES = ["TERM", "QUIT", "KILL", "USR1", "RTMIN+3", "RTMAX-2", "PWR", "WINCH"]
signals = st.one_of(
    st.tuples(st.sampled_from(["", "SIG", "sig"]), st.sampled_from(SIGNAL_NAMES)).map(
        lambda pair: pair[0] + (pair[1].lower() if pair[0] == "sig" else pair[1])
    ),
    st.integers(1, 64).map(str),
)
ports = st.tuples(st.integers(0, 65535), st.sampled_from(["", "/tcp", "/udp", "/sctp", "/TCP"]))
durations = st.sampled_from([0, 1_000_000, 1_500_000, 2_000_000_001, 30_000_000_000])


def engine_view(text: str) -> str:
    """A string as the engine reports it: bytes that are not UTF-8 become U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def json_array_prefix(text: str) -> bool:
    try:
        parsed, _ = json.JSONDecoder().raw_decode(text)
    except ValueError:
        return False
    return isinstance(parsed, list)


def shell_text_ok(text: str) -> bool:
    """The spec of a HEALTHCHECK shell form a Dockerfile line can hold."""
    return (
        bool(text)
        and "\n" not in text
        and not go_space(text[0])
        and not go_space(text[-1])
        and not text.endswith("\\")
        and not json_array_prefix(text)
    )


def sanitized_shell_text(text: str) -> str:
    """The text made one a HEALTHCHECK line can hold (see shell_text_ok)."""
    text = text.replace("\n", " ")
    while text and go_space(text[0]):
        text = text[1:]
    while text and (go_space(text[-1]) or text[-1] == "\\"):
        text = text[:-1]
    return "x" + text if not text or text.startswith("[") else text


@st.composite
def examples(draw: Any) -> Example:
    config: dict[str, Any] = {}
    refused: list[str] = []
    names = st.dictionaries(
        hostile_text.filter(lambda n: n and "=" not in n), hostile_text, max_size=4
    )
    env = draw(names)
    config["Env"] = [f"{name}={value}" for name, value in env.items()]
    if len({engine_view(name) for name in env}) < len(env):
        refused.append("ENV")  # two names that differ only in bytes that are not UTF-8
    if draw(st.integers(0, 14)) == 0:
        config["Env"].append(draw(st.sampled_from(["NOVALUE", "=empty name"])))
        refused.append("ENV")
    # Values with a newline are short; so are those whose key goes to the
    # engine: test_context_only... and the unit tests cover the size limit.
    labels = draw(st.dictionaries(short_hostile, hostile_text, max_size=4))
    config["Labels"] = {
        key: value if not ("=" in key or "\n" in key) else value[:100]
        for key, value in labels.items()
    }
    if draw(st.booleans()):
        workdir, bad = pick(
            draw,
            short_hostile.map(lambda t: "/" + t.replace("\0", "")),
            short_hostile.filter(lambda t: not t.startswith("/")).map(lambda t: t + "\0"),
        )
        config["WorkingDir"] = workdir
        if bad:
            refused.append("WORKDIR")
    if draw(st.booleans()):
        config["User"] = draw(hostile_text)
    if draw(st.booleans()):
        valid = st.lists(ports, max_size=3).map(
            lambda items: {f"{p}{proto}": {} for p, proto in items}
        )
        exposed, bad = pick(draw, valid, short_hostile.map(lambda t: {f"80/tcp{t}\n": {}}))
        config["ExposedPorts"] = exposed
        if bad:
            refused.append("EXPOSE")
    if draw(st.booleans()):
        volumes = draw(
            st.lists(short_hostile.map(lambda t: t.replace("\0", "") or "/"), max_size=3)
        )
        config["Volumes"] = {volume: {} for volume in volumes}
    if draw(st.booleans()):
        signal, bad = pick(draw, signals, short_hostile.map(lambda t: "SIGTERM" + t + "\n"))
        config["StopSignal"] = signal
        if bad:
            refused.append("STOPSIGNAL")
    if draw(st.booleans()):
        config["Shell"] = draw(st.lists(hostile_text, min_size=1, max_size=3))
    if draw(st.booleans()):
        kind = draw(st.sampled_from(["CMD", "CMD-SHELL", "NONE"]))
        check: dict[str, Any] = {}
        if kind == "NONE":
            check["Test"] = ["NONE"]
        elif kind == "CMD":
            check["Test"] = ["CMD", *draw(st.lists(hostile_text, min_size=1, max_size=3))]
        else:
            text = draw(hostile_text)
            if draw(st.integers(0, 4)):  # mostly a text a line can hold; else as drawn
                text = sanitized_shell_text(text)
            check["Test"] = ["CMD-SHELL", text]
            if not shell_text_ok(engine_view(text)):
                refused.append("HEALTHCHECK")
        if kind != "NONE":
            for key in ("Interval", "Timeout", "StartPeriod"):
                check[key] = draw(durations)
            check["Retries"] = draw(st.integers(0, 5))
        config["Healthcheck"] = check
    for key in ("Entrypoint", "Cmd"):
        if draw(st.booleans()):
            config[key] = draw(st.lists(hostile_text, max_size=3))
    return Example(config, refused[0] if refused else None)


def tiny_rootfs() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        member = tarfile.TarInfo("etc")
        member.type, member.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(member)
    return out.getvalue()


def normal_ports(ports: dict[str, Any] | None) -> set[str]:
    found = set()
    for spec in ports or {}:
        number, _, proto = spec.partition("/")
        found.add(f"{int(number)}/{(proto or 'tcp').lower()}")
    return found


def assert_same_config(fat: dict[str, Any], micro: dict[str, Any]) -> None:
    """Field by field, what slim is responsible for; the builder's own
    normalisations are applied to the fat side (see slimmer/dockerfile.py)."""
    fat_env = dict(item.split("=", 1) for item in fat.get("Env") or [])
    fat_env.setdefault("PATH", DEFAULT_PATH.split("=", 1)[1])
    micro_env = [item.split("=", 1) for item in micro.get("Env") or []]
    assert dict(micro_env) == fat_env and len(micro_env) == len(fat_env)
    assert (micro.get("Labels") or {}) == (fat.get("Labels") or {})
    for key in ("WorkingDir", "User", "StopSignal", "Cmd"):
        assert micro.get(key) == fat.get(key), key
    assert normal_ports(micro.get("ExposedPorts")) == normal_ports(fat.get("ExposedPorts"))
    assert (micro.get("Volumes") or {}) == (fat.get("Volumes") or {})
    for key in ("Shell", "Entrypoint"):
        assert (micro.get(key) or None) == (fat.get(key) or None), key
    assert micro.get("Healthcheck") == fat.get("Healthcheck")


BATCH = 4  # configs built at once: the classic builder is slow per instruction


def build_one(engine: Engine, images: ImageMaker, tag: str, example: Example) -> str:
    """Load the fat image, render and build; 'built' or 'refused', or an
    AssertionError saying how the micro image differs."""
    rootfs = tiny_rootfs()
    images.load(f"{tag}:fat", example.config, [layer_tar({"etc": LayerFile(None, 0o755)})])
    fat = engine.image_attrs(f"{tag}:fat")["Config"]
    try:
        dockerfile = render_dockerfile(ImageConfig.from_inspect({"Config": fat}), "scratch", {})
    except DockerfileError as refused:
        assert example.refused_because, f"refused what the builder can carry: {refused.message}"
        assert example.refused_because in refused.message and "\n" not in refused.message
        return "refused"
    assert example.refused_because is None, f"{example.refused_because} was not refused"
    context = io.BytesIO()
    write_context(dockerfile.text, io.BytesIO(rootfs), len(rootfs), context)
    context.seek(0)
    images.track(f"{tag}:micro")
    engine.build(
        context, f"{tag}:micro", labels=dockerfile.labels, build_args=dockerfile.build_args
    )
    assert_same_config(fat, engine.image_attrs(f"{tag}:micro")["Config"])
    return "built"


def test_any_config_is_built_exactly_or_refused(engine: Engine, images: ImageMaker) -> None:
    outcomes: Counter[str] = Counter()

    @settings(
        max_examples=10,  # of BATCH configs each
        deadline=None,
        derandomize=True,
        phases=(Phase.explicit, Phase.reuse, Phase.generate),  # shrinking builds for minutes
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(batch=st.lists(examples(), min_size=BATCH, max_size=BATCH))
    def check(batch: list[Example]) -> None:
        tags = [f"slim-test-prop-{images.run_id}-{index}" for index in range(BATCH)]
        try:
            with ThreadPoolExecutor(BATCH) as pool:
                outcomes.update(pool.map(partial(build_one, engine, images), tags, batch))
        finally:
            images.remove_all()

    check()
    assert outcomes["built"] >= 20, outcomes


def test_values_longer_than_a_line_are_carried(engine: Engine, images: ImageMaker) -> None:
    """A Dockerfile line holds less than 64 KiB; longer values are folded
    into continuation lines that the parser joins back exactly."""
    long = "#\\ \"$x'" * 10_000  # 70,000 bytes
    config = {
        "Env": [f"LONG={long}", "PATH=/bin"],
        "Labels": {"long": long},
        "User": long,
        "Cmd": [long, "x"],
        "Healthcheck": {"Test": ["CMD", long]},
    }
    try:
        assert (
            build_one(engine, images, f"slim-test-long-{images.run_id}", Example(config, None))
            == "built"
        )
    finally:
        images.remove_all()
