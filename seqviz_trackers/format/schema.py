"""The one schema of a logged step, and its validation.

The JSON Schema (2020-12) lives beside this file in ``training_data.schema.json``.
It is compiled once, on first use, into plain Python code (``fastjsonschema``):
validating a converter's entry costs about 2.5 times serialising it.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from importlib import resources
from typing import Any, Callable

SCHEMA_VERSION = 1

__all__ = ["SCHEMA_VERSION", "SchemaValidationError", "load_schema", "validate_entry", "check_schema", "find_non_finite"]


class SchemaValidationError(ValueError):
    """An entry does not match the schema. ``path`` is the JSON path of the offending field."""

    def __init__(self, message: str, path: str = "$"):
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.reason = message


def load_schema() -> dict[str, Any]:
    """The schema as a dict (a fresh copy each call)."""
    text = resources.files(__package__).joinpath("training_data.schema.json").read_text("utf-8")
    return json.loads(text)


def _as_draft7(node: Any) -> Any:
    """fastjsonschema speaks draft 7: spell 2020-12's ``prefixItems`` as draft 7's tuple ``items``."""
    if isinstance(node, dict):
        return {("items" if k == "prefixItems" else k): _as_draft7(v) for k, v in node.items() if k != "$schema"}
    if isinstance(node, list):
        return [_as_draft7(v) for v in node]
    return node


@lru_cache(maxsize=None)
def _compiled(definition: str | None = None) -> Callable[[Any], Any]:
    """The whole schema, or one of its ``$defs``, compiled."""
    import fastjsonschema

    schema = load_schema()
    # The two candidate forms are told apart by their JSON type (array, object), so "any of"
    # means "one of" here; fastjsonschema's oneOf tries both forms of every candidate (and
    # makes an exception object for the one that fails), anyOf stops at the first that fits.
    items = schema["$defs"]["candidates"]["items"]
    items["anyOf"] = items.pop("oneOf")
    return fastjsonschema.compile(_as_draft7(schema if definition is None else schema["$defs"][definition]))


#: A candidate is one of two forms (the schema's ``oneOf``); which one it meant to be, by its JSON type.
_CANDIDATE_FORMS = {list: "candidate_triple", dict: "candidate_object"}
_EITHER_FORM = 'must be a [token id, display string, probability] triple or a {"token_id", "token_str", "prob"} object'


def _json_path(parts: list[str]) -> str:
    path = "$"
    for part in parts[1:]:  # parts[0] is fastjsonschema's "data"
        path += f"[{part}]" if part.isdigit() else f".{part}"
    return path


def validate_entry(entry: Any) -> None:
    """Raise :class:`SchemaValidationError` if ``entry`` is not a valid step.

    Besides the schema, every number must be finite: JSON has no NaN or Infinity.
    """
    check_schema(entry)
    bad = find_non_finite(entry)
    if bad is not None:
        raise SchemaValidationError("is NaN or infinite; JSON cannot hold it", bad)


def check_schema(entry: Any) -> None:
    """The schema part of :func:`validate_entry` (writers check finiteness while serialising)."""
    import fastjsonschema

    try:
        _compiled()(entry)
    except fastjsonschema.JsonSchemaValueException as exc:
        path = list(exc.path or ["data"])
        if exc.rule == "anyOf":  # a candidate of neither form: say what is wrong with the form it has
            form = _CANDIDATE_FORMS.get(type(exc.value))
            if form is None:
                raise SchemaValidationError(_EITHER_FORM, _json_path(path)) from None
            try:
                _compiled(form)(exc.value)
            except fastjsonschema.JsonSchemaValueException as inner:
                exc, path = inner, path + list(inner.path or ["data"])[1:]
        prefix = exc.name or "data"
        reason = exc.message[len(prefix):].strip() if exc.message.startswith(prefix) else exc.message
        raise SchemaValidationError(reason, _json_path(path)) from None


def find_non_finite(value: Any, path: str = "$") -> str | None:
    """JSON path of the first NaN/Infinity float inside ``value``, or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    if isinstance(value, dict):
        for key, item in value.items():
            found = find_non_finite(item, f"{path}.{key}")
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = find_non_finite(item, f"{path}[{i}]")
            if found:
                return found
    return None
