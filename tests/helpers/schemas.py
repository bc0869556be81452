"""Validate what slim writes against the JSON Schemas it ships."""

from __future__ import annotations

import json
from typing import Any

import jsonschema

from slimmer.schema import shipped


def assert_valid(name: str, document: Any) -> None:
    """Fail with the first violation when `document` (parsed JSON or its
    text) does not follow the shipped schema `name`."""
    if isinstance(document, (str, bytes)):
        document = json.loads(document)
    schema = json.loads(shipped(name))
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    assert not errors, f"{name}: {errors[0].message} at {list(errors[0].absolute_path)}"
