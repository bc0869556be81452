"""slimmer.wire: strict reading of untrusted JSON, and the schemas derived
from the same types (shipped files must match them)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar, Literal

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slimmer import wire
from slimmer.rootfs import Kind
from slimmer.schema import NAMES, generate, render, shipped
from slimmer.trace import (
    Access,
    CommandAnswer,
    ExecProbe,
    HttpAnswer,
    HttpProbe,
    ImageConfig,
    NoAnswer,
    ProbeResult,
    Trace,
    TracedFile,
)
from tests.helpers.schemas import assert_valid


class Color(StrEnum):
    RED = "red"


@dataclass(frozen=True)
class Leaf:
    KIND: ClassVar[str] = "leaf"
    name: str


@dataclass(frozen=True)
class Other:
    KIND: ClassVar[str] = "other"
    count: int


@dataclass(frozen=True, kw_only=True)
class Doc:
    schema: Literal["x/1"] = "x/1"
    color: Color
    ratio: float
    flag: bool = False
    items: tuple[Leaf | Other, ...] = ()
    names: dict[str, str] = field(default_factory=dict)
    maybe: int | None = None


def test_round_trip_with_tags_enums_and_odd_strings() -> None:
    odd = os.fsdecode(b"caf\xe9\n")
    doc = Doc(color=Color.RED, ratio=1, items=(Leaf(odd), Other(3)), names={odd: odd})
    text = wire.dumps(doc)
    assert text.isascii()
    assert wire.loads(Doc, text) == doc
    assert json.loads(text)["items"][0] == {"kind": "leaf", "name": odd}


def test_written_in_pieces_it_is_the_same_text() -> None:
    """A large result is written piece by piece, never as one string; the
    text is the one dumps writes."""
    odd = os.fsdecode(b'caf\xe9\n"')
    doc = Doc(
        color=Color.RED,
        ratio=0.5,
        items=(*(Leaf(f"{odd}{n}") for n in range(50)), Other(3)),
        names={odd: odd, "": ""},
    )
    pieces = list(wire.dump_chunks(doc))
    assert "".join(pieces) == wire.dumps(doc, indent=None)
    assert max(len(piece) for piece in pieces) < len(wire.dumps(doc, indent=None)) / 10
    assert "".join(wire.dump_chunks(Doc(color=Color.RED, ratio=1))) == wire.dumps(
        Doc(color=Color.RED, ratio=1), indent=None
    )


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"color": "red", "ratio": 1, "extra": 1}, "unknown key 'extra'"),
        ({"color": "blue", "ratio": 1}, "'blue' is not one of"),
        ({"color": "red"}, "lacks 'ratio'"),
        ({"color": "red", "ratio": True}, "expected float"),
        ({"color": "red", "ratio": float("nan")}, "finite"),
        ({"color": "red", "ratio": 1, "flag": 1}, "expected bool"),
        ({"color": "red", "ratio": 1, "maybe": "1"}, "maybe: expected int"),
        ({"color": "red", "ratio": 1, "items": [{"kind": "tree"}]}, "kind 'tree'"),
        ({"color": "red", "ratio": 1, "items": [{"name": "x"}]}, "kind None"),
        ({"color": "red", "ratio": 1, "items": {"a": 1}}, "expected a list"),
        ({"color": "red", "ratio": 1, "names": {"a": 1}}, "names.a: expected str"),
        ({"schema": "x/2", "color": "red", "ratio": 1}, "expected 'x/1'"),
        ([], "expected an object"),
    ],
)
def test_what_does_not_fit_is_refused_with_where(data: object, says: str) -> None:
    with pytest.raises(wire.WireError, match=says):
        wire.decode(Doc, data)


def test_limits_bound_untrusted_input() -> None:
    limits = wire.Limits(max_bytes=1000, max_string=10, max_items=3)
    with pytest.raises(wire.WireError, match="limit"):
        wire.loads(Doc, " " * 1001, limits)
    with pytest.raises(wire.WireError, match="too long"):
        wire.decode(Doc, {"color": "red", "ratio": 1, "names": {"a": "x" * 11}}, limits)
    with pytest.raises(wire.WireError, match="too many"):
        wire.decode(
            Doc, {"color": "red", "ratio": 1, "items": [{"kind": "other", "count": 1}] * 4}, limits
        )
    with pytest.raises(wire.WireError, match="nested too deeply"):
        wire.loads(Doc, "[" * 100_000 + "]" * 100_000)
    with pytest.raises(wire.WireError, match="not JSON"):
        wire.loads(Doc, b"\xff\xfe{")


@pytest.mark.parametrize("name", NAMES)
def test_shipped_schemas_are_the_generated_ones(name: str) -> None:
    """The files in slimmer/schemas are derived from the code; regenerate
    them with `python -m slimmer.schema` after changing a format."""
    assert shipped(name) == render(generate(name))
    jsonschema.Draft202012Validator.check_schema(json.loads(shipped(name)))


def test_a_trace_follows_its_schema_and_the_schema_refuses_strangers() -> None:
    trace = Trace(
        image="x",
        image_id="sha256:1",
        config=ImageConfig(cmd=("a",), exposed_ports=("80/tcp",)),
        command=("a",),
        user="",
        files=(TracedFile("/a", Kind.FILE, (Access.OPENED,)), TracedFile("/b", "gone", ())),
        probes=(
            ProbeResult(HttpProbe("GET", "/", 80), HttpAnswer(200, {}, "0" * 64, 0), True),
            ProbeResult(ExecProbe(("x",)), CommandAnswer(0, "", "", "", ""), True),
            ProbeResult(ExecProbe(("y",)), NoAnswer("gone"), False),
        ),
    )
    data = json.loads(trace.to_json())
    assert_valid("trace", data)
    data["files"][0]["access"] = ["sniffed"]
    with pytest.raises(AssertionError, match="sniffed"):
        assert_valid("trace", data)


@dataclass(frozen=True)
class Pairs:
    fields: tuple[tuple[str, int], ...] = ()


def test_fixed_tuples_have_their_length_and_types() -> None:
    assert wire.loads(Pairs, '{"fields": [["a", 1], ["b", 2]]}') == Pairs((("a", 1), ("b", 2)))
    for bad in ('{"fields": [["a"]]}', '{"fields": [["a", 1, 2]]}', '{"fields": [[1, "a"]]}'):
        with pytest.raises(wire.WireError):
            wire.loads(Pairs, bad)
    schema = wire.schema_of(Pairs, title="pairs")
    jsonschema.validate({"fields": [["a", 1]]}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"fields": [["a", 1, 2]]}, schema)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_docs = st.fixed_dictionaries(
    {"color": st.sampled_from(["red", "blue", 1]), "ratio": st.integers() | st.floats()},
    optional={
        "flag": st.booleans() | st.integers(0, 1),
        "items": st.lists(
            st.fixed_dictionaries({"kind": st.sampled_from(["leaf", "other", "tree"])}).map(
                lambda d: {**d, "name": "n"} if d["kind"] == "leaf" else {**d, "count": 2}
            )
            | _json,
            max_size=3,
        ),
        "names": st.dictionaries(st.text(max_size=12), st.text(max_size=12) | st.integers()),
        "maybe": st.none() | st.integers() | st.text(max_size=3),
        "schema": st.sampled_from(["x/1", "x/2"]),
        "extra": _json,
    },
)


@settings(max_examples=400, deadline=None)
@given(data=_docs | _json)
def test_the_compiled_reader_reads_what_the_describing_decoder_reads(data: object) -> None:
    """decode reads with a reader compiled per type, and explains refusals
    with _Decoder: both must agree on every input (the fast one never takes
    what the other refuses, and reads the same values)."""
    limits = wire.Limits(max_string=10, max_items=3)
    try:
        expected = wire._Decoder(limits).value(Doc, data, "")
    except wire.WireError:
        with pytest.raises(wire._Refused):
            wire._reader(Doc, limits)(data)
    else:
        assert wire._reader(Doc, limits)(data) == expected
