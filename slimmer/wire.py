"""Strict JSON for frozen dataclasses: one way to write, read and describe
everything slim puts in a file or takes out of a container.

`dumps` writes a dataclass as JSON; `loads` reads it back and validates it
on the way: every key must be a field (unknown keys are refused), every
value must have the field's type, strings, lists and nesting are bounded.
What comes out of a container or a file is untrusted, so nothing is read
with `.get(key, default)`: a renamed or forged key is an error that names
where it is. `schema_of` derives the JSON Schema (draft 2020-12) from the
same type hints, so the shipped schemas cannot drift from the code.

Supported field types: str, int, float, bool, None, `X | None`, Literal of
strings, Enum subclasses (by value), list[T] and tuple[T, ...] (both read
as tuples), fixed tuples tuple[A, B], dict[str, T], nested dataclasses,
and unions of dataclasses that each carry a `KIND: ClassVar[str]`
(written as a "kind" key).

Paths are str with surrogateescape; JSON keeps undecodable bytes as
\\udcXX escapes (ensure_ascii), which round-trip exactly.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from slimmer.errors import ExitCode, SlimError

T = TypeVar("T")

KIND_KEY = "kind"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


class WireError(SlimError):
    """JSON that is not what it claims to be: the wrong shape, unknown keys,
    or values beyond the limits."""

    exit_code = ExitCode.ERROR


@dataclass(frozen=True)
class Limits:
    """Bounds on untrusted JSON."""

    max_bytes: int = 512 * 1024 * 1024
    max_string: int = 1024 * 1024  # characters in one string
    max_items: int = 4_000_000  # entries in one list or object


DEFAULT_LIMITS = Limits()


# -- type analysis, once per class --------------------------------------------


@dataclass(frozen=True)
class FieldSpec:
    name: str
    hint: Any
    required: bool
    default: Any  # dataclasses.MISSING when required


_FIELDS: dict[type, tuple[FieldSpec, ...]] = {}


def fields_of(cls: type) -> tuple[FieldSpec, ...]:
    """The fields of a dataclass with their resolved type hints."""
    known = _FIELDS.get(cls)
    if known is not None:
        return known
    hints = typing.get_type_hints(cls)
    specs = []
    for item in dataclasses.fields(cls):
        if not item.init:
            continue
        if item.default is not dataclasses.MISSING:
            default: Any = item.default
        elif item.default_factory is not dataclasses.MISSING:
            default = item.default_factory()
        else:
            default = dataclasses.MISSING
        required = default is dataclasses.MISSING
        specs.append(FieldSpec(item.name, hints[item.name], required, default))
    result = tuple(specs)
    _FIELDS[cls] = result
    return result


def _union_members(hint: Any) -> tuple[Any, ...] | None:
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(hint)
    return None


def _item_types(hint: Any, count: int) -> list[Any] | None:
    """The type of each of `count` items of a list or tuple hint: list[T] and
    tuple[T, ...] repeat T; a fixed tuple[A, B] needs exactly its count."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple and args and args[-1] is not Ellipsis:
        return list(args) if len(args) == count else None
    return [args[0] if args else Any] * count


def _kind_of(cls: type) -> str:
    kind = getattr(cls, "KIND", None)
    if not isinstance(kind, str):
        raise TypeError(f"{cls.__name__} is in a union but has no KIND")
    return kind


# -- decoding -----------------------------------------------------------------


class _Decoder:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    def fail(self, where: str, message: str) -> WireError:
        return WireError(f"{where or 'top level'}: {message}")

    def value(self, hint: Any, data: Any, where: str) -> Any:
        members = _union_members(hint)
        if members is not None:
            return self.union(members, data, where)
        if hint is Any:
            return data
        if hint is type(None):
            if data is not None:
                raise self.fail(where, f"expected null, got {_name(data)}")
            return None
        origin = typing.get_origin(hint)
        if origin is typing.Literal:
            allowed = typing.get_args(hint)
            if data not in allowed:
                raise self.fail(where, f"expected {' or '.join(map(repr, allowed))}, got {data!r}")
            return data
        if origin in (list, tuple):
            return self.sequence(hint, data, where)
        if origin is dict:
            return self.mapping(hint, data, where)
        if isinstance(hint, type):
            if dataclasses.is_dataclass(hint):
                return self.dataclass(hint, data, where)
            if issubclass(hint, enum.Enum):
                try:
                    return hint(data)
                except ValueError:
                    values = ", ".join(repr(m.value) for m in hint)
                    raise self.fail(where, f"{data!r} is not one of {values}") from None
            return self.scalar(hint, data, where)
        raise TypeError(f"wire cannot handle the type {hint!r}")

    def scalar(self, hint: type, data: Any, where: str) -> Any:
        if hint is bool:
            if isinstance(data, bool):
                return data
        elif hint is int:
            if isinstance(data, int) and not isinstance(data, bool):
                return data
        elif hint is float:
            if isinstance(data, (int, float)) and not isinstance(data, bool):
                if data != data or data in (float("inf"), float("-inf")):
                    raise self.fail(where, "not a finite number")
                return float(data)
        elif hint is str:
            if isinstance(data, str):
                if len(data) > self.limits.max_string:
                    raise self.fail(where, f"a string of {len(data)} characters is too long")
                return data
        else:
            raise TypeError(f"wire cannot handle the type {hint!r}")
        raise self.fail(where, f"expected {hint.__name__}, got {_name(data)}")

    def sequence(self, hint: Any, data: Any, where: str) -> tuple[Any, ...]:
        if not isinstance(data, list):
            raise self.fail(where, f"expected a list, got {_name(data)}")
        if len(data) > self.limits.max_items:
            raise self.fail(where, f"{len(data)} items are too many")
        items = _item_types(hint, len(data))
        if items is None:
            raise self.fail(where, f"expected {len(typing.get_args(hint))} items, got {len(data)}")
        return tuple(
            self.value(item, element, f"{where}[{i}]")
            for i, (item, element) in enumerate(zip(items, data, strict=True))
        )

    def mapping(self, hint: Any, data: Any, where: str) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self.fail(where, f"expected an object, got {_name(data)}")
        if len(data) > self.limits.max_items:
            raise self.fail(where, f"{len(data)} keys are too many")
        _, item = typing.get_args(hint)
        result = {}
        for key, element in data.items():
            self.scalar(str, key, where)
            result[key] = self.value(item, element, f"{where}.{key}")
        return result

    def dataclass(self, cls: type, data: Any, where: str) -> Any:
        if not isinstance(data, dict):
            raise self.fail(where, f"expected an object ({cls.__name__}), got {_name(data)}")
        specs = fields_of(cls)
        known = {spec.name for spec in specs}
        kind = getattr(cls, "KIND", None)
        extra = set(data) - known - ({KIND_KEY} if kind is not None else set())
        if extra:
            raise self.fail(where, f"unknown key {sorted(extra)[0]!r} in {cls.__name__}")
        if kind is not None and data.get(KIND_KEY, kind) != kind:
            raise self.fail(where, f"kind {data.get(KIND_KEY)!r} is not {kind!r}")
        values = {}
        for spec in specs:
            inner = f"{where}.{spec.name}" if where else spec.name
            if spec.name in data:
                values[spec.name] = self.value(spec.hint, data[spec.name], inner)
            elif spec.required:
                raise self.fail(where, f"{cls.__name__} lacks {spec.name!r}")
        return cls(**values)

    def union(self, members: tuple[Any, ...], data: Any, where: str) -> Any:
        if data is None and type(None) in members:
            return None
        rest = [m for m in members if m is not type(None)]
        if len(rest) == 1:
            return self.value(rest[0], data, where)
        if all(isinstance(m, type) and dataclasses.is_dataclass(m) for m in rest):
            if not isinstance(data, dict):
                raise self.fail(where, f"expected an object, got {_name(data)}")
            kinds = {_kind_of(m): m for m in rest}
            chosen = kinds.get(data.get(KIND_KEY))
            if chosen is None:
                raise self.fail(
                    where, f"kind {data.get(KIND_KEY)!r} is not one of {', '.join(sorted(kinds))}"
                )
            return self.dataclass(chosen, data, where)
        for member in rest:  # unions of scalars: the first that fits
            try:
                return self.value(member, data, where)
            except WireError:
                continue
        raise self.fail(where, f"{_name(data)} fits none of the allowed types")


def _name(data: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(data), "null" if data is None else type(data).__name__
    )


def decode(cls: type[T], data: Any, limits: Limits = DEFAULT_LIMITS) -> T:
    """Validate plain JSON data (as json.loads returns it) into `cls`.

    A reader compiled once per type does the work (slimmer's files hold a
    million values); where it refuses something, _Decoder goes over the
    data again, keeping track of where it is, for the error to name it."""
    try:
        result: T = _reader(cls, limits)(data)
    except _Refused:
        result = _Decoder(limits).value(cls, data, "")
    return result


class _Refused(Exception):
    """A compiled reader met something it does not accept (_Decoder says why)."""


Reader = typing.Callable[[Any], Any]
_READERS: dict[tuple[Any, Limits], Reader] = {}


def _reader(hint: Any, limits: Limits) -> Reader:
    key = (hint, limits)
    found = _READERS.get(key)
    if found is None:
        found = _compile(hint, limits)
        _READERS[key] = found
    return found


def _compile(hint: Any, limits: Limits) -> Reader:
    """A function that reads data as `hint`, as _Decoder.value does, raising
    _Refused instead of naming what is wrong."""
    members = _union_members(hint)
    if members is not None:
        return _compile_union(members, limits)
    if hint is Any:
        return lambda data: data
    if hint is type(None):
        return _check(lambda data: data is None)
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        allowed = typing.get_args(hint)
        return _check(lambda data: data in allowed)
    if origin in (list, tuple):
        return _compile_sequence(hint, limits)
    if origin is dict:
        return _compile_mapping(hint, limits)
    if isinstance(hint, type):
        if dataclasses.is_dataclass(hint):
            return _compile_dataclass(hint, limits)
        if issubclass(hint, enum.Enum):
            return _compile_enum(hint)
        return _compile_scalar(hint, limits)
    raise TypeError(f"wire cannot handle the type {hint!r}")


def _check(accepts: typing.Callable[[Any], bool]) -> Reader:
    def read(data: Any) -> Any:
        if not accepts(data):
            raise _Refused
        return data

    return read


def _compile_scalar(hint: type, limits: Limits) -> Reader:
    if hint is bool:
        return _check(lambda data: isinstance(data, bool))
    if hint is int:
        return _check(lambda data: isinstance(data, int) and not isinstance(data, bool))
    if hint is str:
        longest = limits.max_string
        return _check(lambda data: isinstance(data, str) and len(data) <= longest)
    if hint is float:

        def read_float(data: Any) -> float:
            number = isinstance(data, (int, float)) and not isinstance(data, bool)
            if number and data == data and data not in (float("inf"), float("-inf")):
                return float(data)
            raise _Refused

        return read_float
    raise TypeError(f"wire cannot handle the type {hint!r}")


def _compile_enum(hint: type[enum.Enum]) -> Reader:
    def read(data: Any) -> Any:
        try:
            return hint(data)
        except ValueError:
            raise _Refused from None

    return read


def _compile_sequence(hint: Any, limits: Limits) -> Reader:
    args = typing.get_args(hint)
    most = limits.max_items
    if typing.get_origin(hint) is tuple and args and args[-1] is not Ellipsis:
        fixed = [_reader(arg, limits) for arg in args]

        def read_fixed(data: Any) -> tuple[Any, ...]:
            if not isinstance(data, list) or len(data) != len(fixed):
                raise _Refused
            return tuple(read(item) for read, item in zip(fixed, data, strict=True))

        return read_fixed
    item = _reader(args[0] if args else Any, limits)

    def read_items(data: Any) -> tuple[Any, ...]:
        if not isinstance(data, list) or len(data) > most:
            raise _Refused
        return tuple(map(item, data))

    return read_items


def _compile_mapping(hint: Any, limits: Limits) -> Reader:
    read_value = _reader(typing.get_args(hint)[1], limits)
    read_key = _compile_scalar(str, limits)
    most = limits.max_items

    def read(data: Any) -> dict[str, Any]:
        if not isinstance(data, dict) or len(data) > most:
            raise _Refused
        return {read_key(key): read_value(value) for key, value in data.items()}

    return read


def _compile_dataclass(cls: type, limits: Limits) -> Reader:
    specs = fields_of(cls)
    kind = getattr(cls, "KIND", None)
    allowed = frozenset({spec.name for spec in specs} | ({KIND_KEY} if kind is not None else set()))
    required = frozenset(spec.name for spec in specs if spec.required)
    # Readers are compiled on first use: a dataclass may contain itself.
    fields: list[tuple[str, Any]] = [(spec.name, spec.hint) for spec in specs]
    readers: list[tuple[str, Reader]] = []

    def read(data: Any) -> Any:
        if not isinstance(data, dict) or not data.keys() <= allowed or not required <= data.keys():
            raise _Refused
        if kind is not None and data.get(KIND_KEY, kind) != kind:
            raise _Refused
        if not readers:
            readers.extend((name, _reader(field_hint, limits)) for name, field_hint in fields)
        return cls(**{name: reader(data[name]) for name, reader in readers if name in data})

    return read


def _compile_union(members: tuple[Any, ...], limits: Limits) -> Reader:
    nullable = type(None) in members
    rest = [m for m in members if m is not type(None)]
    if len(rest) == 1:
        only = _reader(rest[0], limits)
        if not nullable:
            return only
        return lambda data: None if data is None else only(data)
    if all(isinstance(m, type) and dataclasses.is_dataclass(m) for m in rest):
        kinds = {_kind_of(m): m for m in rest}
        chosen: dict[str, Reader] = {}

        def read_kind(data: Any) -> Any:
            if data is None and nullable:
                return None
            if not isinstance(data, dict) or data.get(KIND_KEY) not in kinds:
                raise _Refused
            name = data[KIND_KEY]
            if name not in chosen:
                chosen[name] = _reader(kinds[name], limits)
            return chosen[name](data)

        return read_kind
    readers = [_reader(member, limits) for member in rest]

    def read_first(data: Any) -> Any:  # unions of scalars: the first that fits
        if data is None and nullable:
            return None
        for read in readers:
            try:
                return read(data)
            except _Refused:
                continue
        raise _Refused

    return read_first


def parse(text: str | bytes, limits: Limits = DEFAULT_LIMITS) -> Any:
    """JSON text as plain data, bounded in size and depth."""
    if len(text) > limits.max_bytes:
        raise WireError(f"{len(text)} bytes of JSON are more than the limit of {limits.max_bytes}")
    try:
        return json.loads(text)
    except RecursionError:
        raise WireError("the JSON is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(f"not JSON: {exc}") from None


def loads(cls: type[T], text: str | bytes, limits: Limits = DEFAULT_LIMITS) -> T:
    """Parse and validate JSON text into `cls`; WireError on anything else."""
    return decode(cls, parse(text, limits), limits)


# -- encoding -----------------------------------------------------------------


def encode(value: Any) -> Any:
    """Plain JSON data of a dataclass (or any supported value)."""
    encoder = _ENCODERS.get(type(value))
    if encoder is None:
        encoder = _encoder_for(type(value))
        _ENCODERS[type(value)] = encoder
    return encoder(value)


Encoder = typing.Callable[[Any], Any]
_ENCODERS: dict[type, Encoder] = {}


def _encoder_for(kind_of_value: type) -> Encoder:
    """How values of one type are written (chosen once per type)."""
    if dataclasses.is_dataclass(kind_of_value):
        names = [spec.name for spec in fields_of(kind_of_value)]
        kind = getattr(kind_of_value, "KIND", None)
        head = {KIND_KEY: kind} if kind is not None else {}

        def encode_dataclass(value: Any) -> dict[str, Any]:
            out = dict(head)
            for name in names:
                out[name] = encode(getattr(value, name))
            return out

        return encode_dataclass
    if issubclass(kind_of_value, enum.Enum):
        return lambda value: value.value
    if issubclass(kind_of_value, (list, tuple)):
        return lambda value: [encode(item) for item in value]
    if issubclass(kind_of_value, Mapping):
        return lambda value: {str(key): encode(item) for key, item in value.items()}
    return lambda value: value


def dumps(value: Any, *, indent: int | None = 1) -> str:
    """JSON text of a dataclass: keys in field order, ASCII only (surrogate
    escapes survive), a newline at the end."""
    return json.dumps(encode(value), indent=indent, ensure_ascii=True) + "\n"


def dump_chunks(value: Any) -> Iterator[str]:
    """`dumps(value, indent=None)` in pieces, for writing a large value
    without its whole text in memory: every list item and scalar is encoded
    alone (by json's C encoder), objects and lists are written around them."""
    yield from _chunks(encode(value))
    yield "\n"


def _chunks(data: Any) -> Iterator[str]:
    if isinstance(data, dict):
        yield "{"
        for position, (key, item) in enumerate(data.items()):
            yield (", " if position else "") + json.dumps(key, ensure_ascii=True) + ": "
            yield from _chunks(item)
        yield "}"
    elif isinstance(data, list):
        yield "["
        for position, item in enumerate(data):
            if position:
                yield ", "
            yield json.dumps(item, ensure_ascii=True)
        yield "]"
    else:
        yield json.dumps(data, ensure_ascii=True)


# -- JSON Schema --------------------------------------------------------------


def schema_of(cls: type, *, title: str, schema_id: str | None = None) -> dict[str, Any]:
    """The JSON Schema of a dataclass, with its nested classes in $defs."""
    builder = _SchemaBuilder()
    top = builder.object_schema(cls)
    document: dict[str, Any] = {"$schema": JSON_SCHEMA_DIALECT}
    if schema_id:
        document["$id"] = schema_id
    document["title"] = title
    document.update(top)
    if builder.defs:
        document["$defs"] = dict(sorted(builder.defs.items()))
    return document


class _SchemaBuilder:
    def __init__(self) -> None:
        self.defs: dict[str, dict[str, Any]] = {}

    def of(self, hint: Any) -> dict[str, Any]:
        members = _union_members(hint)
        if members is not None:
            return {"anyOf": [self.of(member) for member in members]}
        if hint is Any:
            return {}
        if hint is type(None):
            return {"type": "null"}
        origin = typing.get_origin(hint)
        if origin is typing.Literal:
            allowed = list(typing.get_args(hint))
            return {"const": allowed[0]} if len(allowed) == 1 else {"enum": allowed}
        if origin in (list, tuple):
            args = typing.get_args(hint)
            if origin is tuple and args and args[-1] is not Ellipsis:
                return {
                    "type": "array",
                    "prefixItems": [self.of(arg) for arg in args],
                    "minItems": len(args),
                    "maxItems": len(args),
                }
            return {"type": "array", "items": self.of(args[0] if args else Any)}
        if origin is dict:
            return {"type": "object", "additionalProperties": self.of(typing.get_args(hint)[1])}
        if isinstance(hint, type):
            if dataclasses.is_dataclass(hint):
                return self.reference(hint)
            if issubclass(hint, enum.Enum):
                return {"enum": [member.value for member in hint]}
            scalar = {bool: "boolean", int: "integer", float: "number", str: "string"}.get(hint)
            if scalar is not None:
                return {"type": scalar}
        raise TypeError(f"no schema for {hint!r}")

    def reference(self, cls: type) -> dict[str, Any]:
        name = cls.__name__
        if name not in self.defs:
            self.defs[name] = {}  # a placeholder stops recursion
            self.defs[name] = self.object_schema(cls)
        return {"$ref": f"#/$defs/{name}"}

    def object_schema(self, cls: type) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        required = []
        kind = getattr(cls, "KIND", None)
        if kind is not None:
            properties[KIND_KEY] = {"const": kind}
            required.append(KIND_KEY)
        for spec in fields_of(cls):
            properties[spec.name] = self.of(spec.hint)
            if spec.required:
                required.append(spec.name)
        schema: dict[str, Any] = {"type": "object"}
        doc = (cls.__doc__ or "").strip()
        if doc and not doc.startswith(f"{cls.__name__}("):
            schema["description"] = " ".join(doc.split())
        schema["properties"] = properties
        if required:
            schema["required"] = required
        schema["additionalProperties"] = False
        return schema


__all__ = [
    "DEFAULT_LIMITS",
    "KIND_KEY",
    "Limits",
    "WireError",
    "decode",
    "dumps",
    "encode",
    "loads",
    "parse",
    "schema_of",
]
