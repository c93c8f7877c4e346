"""A quick yes for a valid lab file: the JSON Schema keywords the lab schema uses, checked in plain
Python, so that `validate`, `plan` and `up` of a good file never import jsonschema (≈0.1 s of a
0.2 s `validate`).

It answers only "valid" or "not sure". On "not sure" (the data breaks a rule, or the schema uses a
keyword this module does not know) `load` asks jsonschema as before, and jsonschema words every
message, so no problem report depends on this module. It must therefore never call valid what
jsonschema would reject: each keyword below follows jsonschema's Draft 2020-12 implementation
with the loader's two changes (an integer is an int but not a bool, a pattern is read as ECMA 262
reads it), and anything else is "not sure". tests/unit/test_quickcheck.py holds it to jsonschema's
verdict on every shipped lab and thousands of mutated ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Keywords that only annotate (no format checker is configured, so `format` asserts nothing).
_ANNOTATIONS = frozenset(
    {"description", "default", "title", "$schema", "$id", "$defs", "$comment", "format", "examples", "deprecated"}
)


class _Unsure(Exception):
    """The schema uses something this module does not judge."""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": _is_number,
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _equal(one: Any, two: Any) -> bool:
    """jsonschema's `equal`: strings by value, lists item by item, mappings key by key, and
    booleans never equal to numbers (True is not 1)."""
    if isinstance(one, list) and isinstance(two, list):
        return len(one) == len(two) and all(_equal(a, b) for a, b in zip(one, two, strict=True))
    if isinstance(one, dict) and isinstance(two, dict):
        return one.keys() == two.keys() and all(_equal(one[key], two[key]) for key in one)
    if isinstance(one, list | dict) or isinstance(two, list | dict):
        return False
    if isinstance(one, bool) or isinstance(two, bool):
        return isinstance(one, bool) and isinstance(two, bool) and one == two
    if isinstance(one, str) or isinstance(two, str):
        return isinstance(one, str) and isinstance(two, str) and one == two
    return bool(one == two)


class QuickCheck:
    """`valid(data)`: True when `data` certainly meets `schema` (its local $refs already inlined)."""

    def __init__(self, schema: Any, matches: Callable[[str, str], bool]):
        self.schema = schema
        self.matches = matches  # the loader's pattern test, ECMA `$` included

    def valid(self, data: Any) -> bool:
        try:
            return self._valid(data, self.schema)
        except _Unsure:
            return False

    def _valid(self, value: Any, schema: Any) -> bool:
        if schema is True or schema == {}:
            return True
        if schema is False:
            return False
        if not isinstance(schema, dict):
            raise _Unsure
        return all(self._keyword(key, rule, value, schema) for key, rule in schema.items())

    def _keyword(self, key: str, rule: Any, value: Any, schema: dict[str, Any]) -> bool:
        if key in _ANNOTATIONS:
            return True
        if key == "type":
            names = rule if isinstance(rule, list) else [rule]
            if any(name not in _TYPES for name in names):
                raise _Unsure
            return any(_TYPES[name](value) for name in names)
        if key == "enum":
            return any(_equal(item, value) for item in rule)
        if key == "const":
            return _equal(rule, value)
        if key in ("minimum", "maximum"):
            if not _is_number(rule):
                raise _Unsure
            if not _is_number(value):
                return True
            return bool(value >= rule) if key == "minimum" else bool(value <= rule)
        if key == "pattern":
            return not isinstance(value, str) or self.matches(rule, value)
        if key in ("minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties"):
            return self._size(key, rule, value)
        if key == "if":  # `then` and `else` are read here, as jsonschema's `if` reads them
            branch = "then" if self._valid(value, rule) else "else"
            return branch not in schema or self._valid(value, schema[branch])
        if key in ("then", "else"):
            return True
        if key == "items":
            if isinstance(rule, list) or "prefixItems" in schema:
                raise _Unsure
            return not isinstance(value, list) or all(self._valid(item, rule) for item in value)
        if key == "anyOf":
            return any(self._valid(value, sub) for sub in rule)
        if key == "oneOf":
            return sum(self._valid(value, sub) for sub in rule) == 1
        if key == "not":
            return not self._valid(value, rule)
        if not isinstance(value, dict):
            if key in ("properties", "additionalProperties", "required", "propertyNames"):
                return True  # object keywords say nothing about other values
            raise _Unsure
        return self._object_keyword(key, rule, value, schema)

    def _size(self, key: str, rule: Any, value: Any) -> bool:
        """min/max Items (lists), Length (strings, in code points as len counts), Properties (objects)."""
        applies = {"Items": list, "Length": str, "Properties": dict}[key.removeprefix("min").removeprefix("max")]
        if not isinstance(rule, int) or isinstance(rule, bool):
            raise _Unsure
        if not isinstance(value, applies):
            return True
        return len(value) >= rule if key.startswith("min") else len(value) <= rule

    def _object_keyword(self, key: str, rule: Any, value: dict[str, Any], schema: dict[str, Any]) -> bool:
        if key == "properties":
            return all(self._valid(value[name], sub) for name, sub in rule.items() if name in value)
        if key == "additionalProperties":
            if "patternProperties" in schema:
                raise _Unsure
            known = schema.get("properties", {})
            return all(self._valid(item, rule) for name, item in value.items() if name not in known)
        if key == "required":
            return all(name in value for name in rule)
        if key == "propertyNames":
            return all(self._valid(name, rule) for name in value)
        raise _Unsure
