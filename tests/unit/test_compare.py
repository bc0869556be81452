from __future__ import annotations

import pytest

from slimmer.compare import ImageFigures, SizeError, check_gates, parse_size, render
from slimmer.trace import CommandAnswer, HttpAnswer, NoAnswer
from slimmer.verify import compare_answers


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("20MB", 20_000_000),
        ("13.5MiB", 14_155_776),
        ("500k", 500_000),
        ("123", 123),
        ("1 GiB", 1 << 30),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "5 parsecs", "-1MB"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(SizeError):
        parse_size(text)


ROWS = [ImageFigures("fat", 1000, 5, 100, 1.0), ImageFigures("micro", 100, 1, 3, 10.0)]


def test_gates_apply_after_the_first_image() -> None:
    assert check_gates(ROWS, 200, 5) == []
    assert check_gates(ROWS, 50, None) == ["micro is 100 B, over --max-size 50 B"]
    assert check_gates(ROWS, None, 20) and "--min-ratio 20" in check_gates(ROWS, None, 20)[0]
    assert check_gates(ROWS[:1], 500, None) == ["fat is 1.0 kB, over --max-size 500 B"]


def test_package_counts_are_shown_when_counted() -> None:
    rows = [ImageFigures("fat", 1000, 5, 100, 1.0, 165), ImageFigures("micro", 100, 9, 3, 10.0)]
    text = render(rows, "text", []).splitlines()
    assert text[0].split() == ["image", "size", "bytes", "layers", "files", "packages", "ratio"]
    assert text[1].split()[-2] == "165" and text[2].split()[-2] == "-"
    assert '"packages": 165' in render(rows, "json", [])


def test_markdown_says_whether_gates_passed() -> None:
    assert render(ROWS, "markdown", []).endswith("gates passed")
    assert "**gates failed:** x" in render(ROWS, "markdown", ["x"])


def test_answers_compare_status_headers_and_bodies() -> None:
    fat = {"GET /": HttpAnswer(200, {"content-type": "text/html"}, "a" * 64, 10)}
    same = compare_answers(fat, fat, ("content-type",))
    assert all(check.same for check in same) and len(same) == 3
    micro = {"GET /": HttpAnswer(404, {"content-type": "text/html"}, "b" * 64, 10)}
    differ = {c.aspect for c in compare_answers(fat, micro, ("content-type",)) if not c.same}
    assert differ == {"status", "body"}
    missing = compare_answers(fat, {}, ())
    assert [(c.aspect, c.micro) for c in missing] == [("answer", "not run")]


def test_answers_of_other_kinds_never_match() -> None:
    http = {"x": HttpAnswer(200, {}, "a" * 64, 1)}
    command = {"x": CommandAnswer(0, "a" * 64, "b" * 64, "", "")}
    (check,) = compare_answers(http, command, ())
    assert not check.same
    failed = {"x": NoAnswer("ConnectionRefusedError")}
    (check,) = compare_answers(http, failed, ())
    assert (check.aspect, check.fat, check.micro) == ("answer", "ok", "ConnectionRefusedError")
