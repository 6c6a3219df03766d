"""JSON Schema (draft 2020-12) of the records, generated from their dataclasses.

The schema is derived from the type hints, so it cannot drift from the code: str, int, float,
bool, None, Any, list[X], tuple[X, ...], dict[str, X], unions, Literal, StrEnum and nested
dataclasses (eva-core's `Episode`, `Step`, `ToolCallRecord`, `VideoRef` included) map to their
JSON Schema forms; a field with a default is optional. Objects reject unknown keys, except
eva-core's `Episode`, whose `to_dict` adds derived figures (rounds, total_tokens, ...) that
readers ignore. What the schema cannot say (a tool turn after every reply but the last, the
answer range of number items...) is checked by the dataclasses' `__post_init__`.

`validate(data)` checks a record dict with `jsonschema`, against the schema of its `kind`.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from typing import Any

from eva_data.records.records import KINDS, RecordError


def _type_schema(tp: Any, defs: dict[str, Any]) -> dict[str, Any]:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return {}
    if tp is type(None):
        return {"type": "null"}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    if tp is str:
        return {"type": "string"}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"enum": [m.value for m in tp]}
    if dataclasses.is_dataclass(tp):
        _define(tp, defs)
        return {"$ref": f"#/$defs/{tp.__name__}"}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_type_schema(a, defs) for a in args]}
    if origin in (list, tuple) and (origin is list or (len(args) == 2 and args[1] is Ellipsis)):
        return {"type": "array", "items": _type_schema(args[0], defs)}
    if origin is tuple:
        return {"type": "array", "prefixItems": [_type_schema(a, defs) for a in args], "items": False}
    if origin is dict:
        if args and args[0] is not str:
            raise TypeError(f"JSON objects have string keys, got {tp}")
        return {"type": "object", "additionalProperties": _type_schema(args[1], defs) if args else {}}
    raise TypeError(f"no JSON Schema for type {tp!r}")


def _define(cls: type, defs: dict[str, Any]) -> None:
    if cls.__name__ in defs:
        return
    defs[cls.__name__] = {}  # placeholder: stops recursion on self-reference
    hints = typing.get_type_hints(cls)
    properties, required = {}, []
    for f in dataclasses.fields(cls):
        if not f.init or not f.metadata.get("serialized", True):  # in memory only (Step.frames)
            continue
        properties[f.name] = _type_schema(hints[f.name], defs)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(f.name)
    derived = getattr(cls, "DERIVED", ())
    defs[cls.__name__] = {"type": "object", "properties": properties, "required": required,
                          "additionalProperties": bool(derived),
                          **({"description": (cls.__doc__ or "").strip().split("\n")[0]} if cls.__doc__ else {})}


@functools.cache
def record_schema() -> dict[str, Any]:
    """One schema for any record: `oneOf` SFT trajectory, KTO trajectory, RL prompt (by `kind`)."""
    defs: dict[str, Any] = {}
    for cls in KINDS.values():
        _define(cls, defs)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "eva training record",
            "oneOf": [{"$ref": f"#/$defs/{cls.__name__}"} for cls in KINDS.values()], "$defs": defs}


def validate(data: dict[str, Any]) -> None:
    """Check a record dict against the schema of its `kind`.

    Raises:
        RecordError: the dict does not fit, with jsonschema's best explanation and where.
    """
    import jsonschema

    kind = data.get("kind") if isinstance(data, dict) else None
    if kind not in KINDS:
        raise RecordError(f"record kind must be one of {sorted(KINDS)}, got {kind!r}")
    schema = record_schema()
    one = {"$schema": schema["$schema"], "$ref": f"#/$defs/{KINDS[kind].__name__}", "$defs": schema["$defs"]}
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(one).iter_errors(data))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        message = error.message if len(error.message) <= 300 else error.message[:300] + "..."
        raise RecordError(f"{kind} record does not fit the schema at {where}: {message}")
