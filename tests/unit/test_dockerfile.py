"""The micro image's Dockerfile: the fat image's config, encoded so that no
string from the image can add or change an instruction.

These tests check the text against a model of the builder's line rules;
tests/integration/test_dockerfile_config.py checks the real builder."""

from __future__ import annotations

import re

import pytest

from slimmer.dockerfile import (
    FOLD_AT,
    DockerfileError,
    fold,
    go_space,
    json_pieces,
    quoted_pieces,
    render_dockerfile,
)
from slimmer.errors import ExitCode, UsageError
from slimmer.trace import Healthcheck, ImageConfig

CONFIG = ImageConfig(
    entrypoint=("/entry",),
    cmd=("serve", "--x"),
    env=("PATH=/usr/bin", 'PRICE=$5 "quoted" \\ back'),
    workdir="/srv",
    user="app:grp",
    exposed_ports=("80/tcp",),
    labels={"org.example": "yes"},
    stop_signal="SIGQUIT",
    healthcheck=Healthcheck(test=("CMD", "/entry", "health"), interval=5_000_000_000, retries=3),
    volumes=("/data",),
)

# The builder's line joining (dockerd 20.10: a line ending in an unescaped
# backslash continues; continuation lines that are blank or comments are
# skipped; a line ending in an escaped backslash does not continue).
CONTINUATION = re.compile(r"([^\\])\\[ \t]*$|^\\[ \t]*$")
MAX_LINE = 65535


def logical_lines(text: str) -> list[str]:
    physical = text.split("\n")
    assert physical.pop() == "", "the Dockerfile ends with a newline"
    assert all(len(line.encode()) < MAX_LINE for line in physical)
    lines: list[str] = []
    index = 0
    while index < len(physical):
        line = physical[index].lstrip("".join(c for c in map(chr, range(0x3001)) if go_space(c)))
        index += 1
        if not line or line.startswith("#"):
            continue
        joined, more = CONTINUATION.subn(r"\1", line)
        while more and index < len(physical):
            following = physical[index]
            index += 1
            stripped = following.lstrip(" \t")
            if not stripped or stripped.startswith("#"):
                continue
            part, more = CONTINUATION.subn(r"\1", following)
            joined += part
        lines.append(joined)
    return lines


def test_dockerfile_keeps_the_contract() -> None:
    dockerfile = render_dockerfile(CONFIG, "scratch", {"io.slim.version": "1"})
    lines = dockerfile.text.split("\n")
    assert lines[:2] == ["FROM scratch", "ADD rootfs.tar /"]
    for line in (
        'ENV PATH="/usr/bin" PRICE="\\$5 \\"quoted\\" \\\\ back"',
        'LABEL io.slim.version="1" org.example="yes"',
        "WORKDIR /srv",
        "USER app:grp",
        "EXPOSE 80/tcp",
        'VOLUME ["/data"]',
        "STOPSIGNAL SIGQUIT",
        'HEALTHCHECK --interval=5s --retries=3 CMD ["/entry", "health"]',
        'ENTRYPOINT ["/entry"]',
        'CMD ["serve", "--x"]',
    ):
        assert line in lines
    assert lines.index('ENTRYPOINT ["/entry"]') < lines.index('CMD ["serve", "--x"]')
    assert dockerfile.build_args == {} and dockerfile.labels == {}
    dockerfile.check_self_contained()


INJECTION = "/srv\nCOPY --from=victim /secret /stolen"


@pytest.mark.parametrize(
    "config",
    [
        ImageConfig(workdir=INJECTION),
        ImageConfig(user=INJECTION),
        ImageConfig(env=(f"A={INJECTION}",)),
        ImageConfig(env=("A\nCOPY /a /b=x",)),
        ImageConfig(volumes=(INJECTION,)),
        ImageConfig(labels={"a": INJECTION}),
        ImageConfig(labels={INJECTION: "a"}),
    ],
)
def test_a_newline_never_reaches_the_dockerfile_text(config: ImageConfig) -> None:
    dockerfile = render_dockerfile(config, "scratch", {})
    instructions = [line.split(" ", 1)[0] for line in logical_lines(dockerfile.text)]
    assert "COPY" not in instructions and instructions.count("ADD") == 1
    assert set(instructions) <= {"FROM", "ARG", "ADD", "ENV", "LABEL", "WORKDIR", "USER"} | {
        "VOLUME",
        "ENTRYPOINT",
    }
    carried = [*dockerfile.build_args.values(), *dockerfile.labels, *dockerfile.labels.values()]
    assert any("\nCOPY" in value for value in carried)
    with pytest.raises(DockerfileError, match="--context-only"):
        dockerfile.check_self_contained()


def test_values_needing_the_engine_are_named_once_per_value() -> None:
    config = ImageConfig(env=("A=x\ny", "B=x\ny", "SLIM_ARG_0=z"), workdir="/x\ny")
    dockerfile = render_dockerfile(config, "scratch", {})
    assert dockerfile.build_args == {"SLIM_ARG_1": "x\ny", "SLIM_ARG_2": "/x\ny"}
    assert 'ENV A="${SLIM_ARG_1}" B="${SLIM_ARG_1}" SLIM_ARG_0="z"' in dockerfile.text.split("\n")
    assert dockerfile.text.split("\n")[1:3] == ["ARG SLIM_ARG_1", "ARG SLIM_ARG_2"]


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (ImageConfig(env=("NOEQUALS",)), "ENV entry"),
        (ImageConfig(env=("=v",)), "ENV entry"),
        (ImageConfig(env=("A=1", "A=2")), "ENV name"),
        (ImageConfig(workdir="srv"), "WORKDIR"),
        (ImageConfig(workdir="/a\0b"), "WORKDIR"),
        (ImageConfig(workdir="/" + "a" * 256), "WORKDIR"),
        (ImageConfig(volumes=("",)), "VOLUME"),
        (ImageConfig(volumes=("/a" * 2000,)), "VOLUME"),
        (ImageConfig(volumes=("/a\0",)), "VOLUME"),
        (ImageConfig(exposed_ports=("80/tcp\nCOPY",)), "EXPOSE"),
        (ImageConfig(exposed_ports=("65536/tcp",)), "EXPOSE"),
        (ImageConfig(exposed_ports=("80/icmp",)), "EXPOSE"),
        (ImageConfig(stop_signal="SIGTERM\nCOPY a b"), "STOPSIGNAL"),
        (ImageConfig(stop_signal="SIGUNUSED"), "STOPSIGNAL"),
        (ImageConfig(stop_signal="0"), "STOPSIGNAL"),
        (ImageConfig(healthcheck=Healthcheck(test=("CMD-SHELL", "a\nCOPY b c"))), "CMD-SHELL"),
        (ImageConfig(healthcheck=Healthcheck(test=("CMD-SHELL", "echo \\"))), "CMD-SHELL"),
        (ImageConfig(healthcheck=Healthcheck(test=("CMD-SHELL", " echo"))), "CMD-SHELL"),
        (ImageConfig(healthcheck=Healthcheck(test=("CMD-SHELL", "echo\xa0"))), "CMD-SHELL"),
        (ImageConfig(healthcheck=Healthcheck(test=("CMD-SHELL", '["a"] && b'))), "CMD-SHELL"),
        (ImageConfig(healthcheck=Healthcheck(test=("CMD-SHELL", "a", "b"))), "HEALTHCHECK"),
        (ImageConfig(healthcheck=Healthcheck(test=("CMD",))), "HEALTHCHECK"),
        (ImageConfig(healthcheck=Healthcheck(test=("NONE",), retries=2)), "HEALTHCHECK"),
        (ImageConfig(healthcheck=Healthcheck(test=(), interval=5)), "HEALTHCHECK"),
        (ImageConfig(healthcheck=Healthcheck(test=("X", "y"))), "HEALTHCHECK"),
        (ImageConfig(healthcheck=Healthcheck(test=("CMD", "a"), interval=999_999)), "interval"),
        (ImageConfig(healthcheck=Healthcheck(test=("CMD", "a"), retries=2**31)), "retries"),
        (ImageConfig(cmd=("\udc80",)), "CMD"),
        (ImageConfig(healthcheck=Healthcheck(test=("CMD-SHELL", "#" * 70_000))), "HEALTHCHECK"),
    ],
)
def test_values_a_dockerfile_cannot_carry_are_refused(config: ImageConfig, field: str) -> None:
    with pytest.raises(DockerfileError) as raised:
        render_dockerfile(config, "scratch", {})
    error = raised.value
    assert field in error.message and error.hint
    assert "\n" not in error.message and error.exit_code == ExitCode.ERROR


def test_a_bad_base_name_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        render_dockerfile(ImageConfig(), "busybox\nCOPY a b", {})


def test_odd_but_writable_values_stay_inline() -> None:
    config = ImageConfig(
        env=("A=  lead and trail  ", "B=", "C=#x", "D=\0\r\u2028\x85${x}$y`", "E F=1"),
        labels={"": "", "k\\": '"'},
        user="-u",
        workdir="/--flag",
        stop_signal="rtmax-3",
        exposed_ports=("080", "53/UDP"),
        healthcheck=Healthcheck(test=("CMD-SHELL", "[ -f /x ] # ok"), timeout=1_500_000),
    )
    dockerfile = render_dockerfile(config, "scratch", {})
    assert dockerfile.build_args == {} and dockerfile.labels == {}
    lines = logical_lines(dockerfile.text)
    env = 'ENV A="  lead and trail  " B="" C="#x" D="\0\r\u2028\x85\\${x}\\$y`" "E F"="1"'
    assert env in lines
    assert 'LABEL ""="" "k\\\\"="\\""' in lines
    assert 'USER "-u"' in lines and "WORKDIR /--flag" in lines
    assert "EXPOSE 53/udp 80/tcp" in lines and "STOPSIGNAL rtmax-3" in lines
    assert "HEALTHCHECK --timeout=1500us CMD [ -f /x ] # ok" in lines
    assert "ENTRYPOINT []" in lines and not any(line.startswith("CMD") for line in lines)


@pytest.mark.parametrize(
    "pieces",
    [
        ["ENV ", "a", "=", *quoted_pieces("x" * 70_000 + "#" * 5000 + " " * 9000 + "\\" * 3000)],
        ["CMD ", *json_pieces(["\\" * 40_000, " #" * 20_000, "\n\0" * 10_000])],
        ["HEALTHCHECK CMD ", *("echo " + "a\\ b #" * 20_000)],
    ],
)
def test_long_lines_fold_where_the_parser_joins_them_back(pieces: list[str]) -> None:
    text = fold(pieces, "test") + "\n"
    assert text.count("\n") > 10
    assert all(len(line.encode()) <= FOLD_AT + 16 for line in text.split("\n"))
    assert logical_lines(text) == ["".join(pieces)]


def test_long_values_round_trip_through_render() -> None:
    value = "v\\$\"'#" * 30_000
    config = ImageConfig(env=(f"A={value}",), cmd=(value,), labels={"l": value})
    text = render_dockerfile(config, "scratch", {}).text
    assert f'CMD ["{value}"]' not in text  # folded
    lines = logical_lines(text)
    assert any(line.startswith('ENV A="') and len(line) > len(value) for line in lines)
