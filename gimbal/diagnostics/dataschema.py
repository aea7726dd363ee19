"""JSON schemas derived from typed results (dataclasses), so that a result's type and its schema never drift apart.

:func:`dataclass_schema` maps a dataclass's annotated fields to a JSON schema (draft 2020-12): ``str``,
``int``, ``bool``, ``float`` (a number, or one of the strings ``NaN``/``Infinity``/``-Infinity`` that
:func:`~gimbal.diagnostics.io.to_jsonable` writes for non-finite values), ``Literal`` (an enum), ``list`` and
``tuple`` (arrays), ``dict`` (an object), nested dataclasses, and ``X | None``. Fields without a default are
required. A field's ``metadata["schema"]`` is merged into its schema (a pattern, required keys of a dict).
"""

from __future__ import annotations

import dataclasses
import types
import typing

__all__ = ["dataclass_schema", "NUM"]

NUM = {"oneOf": [{"type": "number"}, {"enum": ["NaN", "Infinity", "-Infinity"]}, {"type": "null"}]}
_SIMPLE = {str: "string", bool: "boolean", int: "integer", dict: "object"}


def _nullable(schema: dict) -> dict:
    if "$ref" in schema or schema == NUM:
        return schema  # numbers already admit null
    if "enum" in schema:
        return {**schema, "enum": [*schema["enum"], None]}
    kind = schema.get("type")
    if isinstance(kind, str):
        return {**schema, "type": [kind, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def _type_schema(tp) -> dict:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        inner = _type_schema(rest[0]) if len(rest) == 1 else {"anyOf": [_type_schema(a) for a in rest]}
        return _nullable(inner) if len(rest) < len(args) else inner
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (list, tuple):
        items = [a for a in args if a is not Ellipsis]
        return {"type": "array", **({"items": _type_schema(items[0])} if items else {})}
    if origin is dict:
        return {"type": "object"}
    if dataclasses.is_dataclass(tp):
        return dataclass_schema(tp)
    if tp is float:
        return dict(NUM)
    if tp in _SIMPLE:
        return {"type": _SIMPLE[tp]}
    if tp is typing.Any or tp is object:
        return {}
    raise TypeError(f"no JSON schema for the annotation {tp!r}")


def dataclass_schema(cls, *, title: str | None = None, description: str | None = None) -> dict:
    """The JSON schema of the JSON form of dataclass ``cls`` (its fields, as :func:`dataclasses.asdict` gives)."""
    hints = typing.get_type_hints(cls)
    properties, required = {}, []
    for f in dataclasses.fields(cls):
        properties[f.name] = {**_type_schema(hints[f.name]), **f.metadata.get("schema", {})}
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(f.name)
    head = {"title": title} if title else {}
    head.update({"description": description} if description else {})
    return {**head, "type": "object", "required": required, "properties": properties}
