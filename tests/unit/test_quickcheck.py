"""The quick schema check must agree with jsonschema: it is what lets a good lab file skip jsonschema,
so calling valid anything jsonschema rejects would hide a user's mistake."""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import pytest

from labbuilder.spec import load as loader
from labbuilder.spec.exercise import exercise_schema
from labbuilder.spec.quickcheck import QuickCheck

LABS = Path(__file__).resolve().parents[2] / "labs"
SHIPPED = sorted(LABS.glob("*.yaml"))
EXERCISES = sorted((LABS / "exercises").glob("*.yaml"))

# Values a mutation puts anywhere: every JSON type, and the edges the schema draws (bool is not an
# integer, 80.0 is not one either, ports end at 65535, names have a pattern, an ECMA `$`).
ODD_VALUES: list[Any] = [
    None, True, False, 0, 1, -1, 80, 80.0, 2.5, 65535, 65536, 2**63, "", "a", "A b", "x\n", "10.0.0.1",
    "10.0.0.0/24", "TCP", "udp", "Local", "worker", [], [1], ["a"], [{}], {}, {"name": "a"}, {"bogus": 1},
]  # fmt: skip


def _places(data: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(data, dict):
        for key, value in data.items():
            found += _places(value, (*path, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            found += _places(value, (*path, i))
    return found


def _mutate(data: Any, rng: random.Random) -> Any:
    """One to three edits: replace a value, drop a key, add an unknown or a known key, grow a list."""
    data = copy.deepcopy(data)
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(_places(data)[1:] or [()])
        if not path:
            return rng.choice(ODD_VALUES)
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        last, action = path[-1], rng.random()
        if action < 0.6:
            parent[last] = copy.deepcopy(rng.choice(ODD_VALUES))
        elif action < 0.75 and isinstance(parent, dict):
            del parent[last]
        elif action < 0.85 and isinstance(parent[last], dict):
            key = rng.choice(["bogus", "name", "port", "replicas", "nodes", "type", "mode", "cidr"])
            parent[last][key] = copy.deepcopy(rng.choice(ODD_VALUES))
        elif isinstance(parent[last], list):
            parent[last].append(copy.deepcopy(rng.choice(parent[last] or ODD_VALUES)))
    return data


def _jsonschema_says(schema: dict[str, Any], data: Any) -> bool:
    return not any(True for _ in loader._validator_class()(loader._inline_refs(schema)).iter_errors(data))


def _data(path: Path, schema: dict[str, Any]) -> Any:
    """As labbuilder reads the file (`on:` stays a key), checked by jsonschema."""
    return loader.load_bytes(path.read_bytes(), str(path), schema).data


def _cases(files: list[Path], schema: dict[str, Any], mutants: int, seed: int) -> list[Any]:
    rng = random.Random(seed)
    bases = [_data(path, schema) for path in files]
    return bases + [_mutate(rng.choice(bases), rng) for _ in range(mutants)]


@pytest.mark.parametrize(
    ("files", "schema"),
    [(SHIPPED, loader.lab_schema), (EXERCISES, exercise_schema)],
    ids=["labs", "exercises"],
)
def test_the_quick_check_gives_jsonschemas_verdict(files: list[Path], schema: Any) -> None:
    checker = QuickCheck(loader._inline_refs(schema()), loader.matches)
    verdicts = {True: 0, False: 0}
    for data in _cases(files, schema(), 1500, seed=len(files)):
        expected = _jsonschema_says(schema(), data)
        assert checker.valid(data) == expected, data
        verdicts[expected] += 1
    assert verdicts[True] > 50 and verdicts[False] > 500  # both answers were really put to the test


def test_every_shipped_lab_takes_the_quick_path() -> None:
    checker = QuickCheck(loader._inline_refs(loader.lab_schema()), loader.matches)
    for path in SHIPPED:
        assert checker.valid(_data(path, loader.lab_schema())), path


def test_an_unknown_keyword_is_not_judged() -> None:
    assert QuickCheck({"type": "object"}, loader.matches).valid({"a": 1})
    assert not QuickCheck({"type": "object", "dependentRequired": {"a": ["b"]}}, loader.matches).valid({"a": 1})
    assert not QuickCheck({"enum": [[1]]}, loader.matches).valid([True])  # True is not 1, in lists too
    assert QuickCheck({"enum": [[1, {"a": "b"}]]}, loader.matches).valid([1.0, {"a": "b"}])


def test_a_valid_file_is_loaded_without_jsonschema() -> None:
    """The point of it all: `validate` of a good lab never imports jsonschema (≈0.1 s)."""
    import subprocess
    import sys

    code = "import sys; from labbuilder.spec.load import load; load(sys.argv[1]); print('jsonschema' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code, str(LABS / "kthw.yaml")], capture_output=True, text=True)
    assert run.stdout.strip() == "False", run.stderr


KEYWORD_SCHEMAS: list[dict[str, Any]] = [
    {"type": "string", "maxLength": 2},
    {"minLength": 1},
    {"type": "object", "maxProperties": 1},
    {"minProperties": 1},
    {"type": "array", "minItems": 1, "maxItems": 2, "items": {"type": "integer", "minimum": 0, "maximum": 3}},
    {"if": {"properties": {"mode": {"const": "a"}}}, "then": {"required": ["x"]}, "else": {"required": ["y"]}},
    {"if": {"type": "string"}, "then": {"pattern": "^[a-z]+$"}},
    {"then": {"required": ["x"]}},  # without `if`, `then` says nothing
    {"oneOf": [{"type": "integer"}, {"type": "number"}]},
    {"not": {"enum": [1, "a", None]}},
    {"enum": [[1], {"x": 1}, [True]]},
    {"type": ["string", "null"], "enum": ["a", None, True]},
    {"propertyNames": {"pattern": "^[a-z]$"}, "additionalProperties": {"type": "boolean"}},
    {"anyOf": [{"required": ["x"]}, {"properties": {"y": {"const": 1}}, "required": ["y"]}]},
]
KEYWORD_VALUES: list[Any] = [
    None, True, 0, 1, 1.0, 2.5, 4, -1, "", "a", "ab", "abc", "A", [], [1], [1, 2], [1, 2, 3], [5], [True],
    {}, {"x": 1}, {"y": 1}, {"y": True}, {"mode": "a"}, {"mode": "a", "x": 1}, {"mode": "b", "y": 1},
    {"a": True, "b": False}, {"A": True}, {"ab": 1},
]  # fmt: skip


@pytest.mark.parametrize("schema", KEYWORD_SCHEMAS, ids=lambda s: ",".join(s))
def test_each_keyword_as_jsonschema_reads_it(schema: dict[str, Any]) -> None:
    checker = QuickCheck(schema, loader.matches)
    for value in KEYWORD_VALUES:
        assert checker.valid(value) == _jsonschema_says(schema, value), value
