"""Load a lab file: YAML with the line and column of every key kept, checked against the JSON Schema.

The result, `Spec`, is the raw data plus a position map so that any later stage can point the
user at `lab.yaml:17:5`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from labbuilder.errors import LabError, Problem, SpecError
from labbuilder.resources import labs_dir, schemas_dir

Path_ = tuple[str | int, ...]


@dataclass
class Spec:
    data: dict[str, Any]
    file: str
    positions: dict[Path_, tuple[int, int]] = field(default_factory=dict)

    def problem(self, path: Path_, message: str, hint: str = "", warning: bool = False) -> Problem:
        """A problem located at `path`, or at its nearest ancestor that has a position."""
        line, col = 0, 0
        for end in range(len(path), -1, -1):
            if path[:end] in self.positions:
                line, col = self.positions[path[:end]]
                break
        return Problem(message, self.file, line, col, hint, warning)


class _Builder:
    """Turns a composed YAML node tree into plain Python data, recording positions."""

    def __init__(self, file: str):
        self.file = file
        self.positions: dict[Path_, tuple[int, int]] = {}
        self.problems: list[Problem] = []
        self._scalars = yaml.SafeLoader("")

    def build(self, node: yaml.Node, path: Path_) -> Any:
        if isinstance(node, yaml.MappingNode):
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                # Keys are names, never YAML 1.1 booleans: `on:` stays "on", not True.
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else self.build(key_node, path)
                here = (*path, key)
                if key in result:
                    mark = key_node.start_mark
                    self.problems.append(
                        Problem(
                            f"duplicate key {key!r}",
                            self.file,
                            mark.line + 1,
                            mark.column + 1,
                            "each key may appear once per mapping",
                        )
                    )
                self.positions[here] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                result[key] = self.build(value_node, here)
            return result
        if isinstance(node, yaml.SequenceNode):
            items = []
            for index, item in enumerate(node.value):
                here = (*path, index)
                self.positions[here] = (item.start_mark.line + 1, item.start_mark.column + 1)
                items.append(self.build(item, here))
            return items
        return self._scalars.construct_object(node, deep=True)


def resolve_path(name: str) -> Path:
    """A lab file path, or the name of a lab shipped with labbuilder (`kthw`)."""
    path = Path(name)
    if path.exists():
        return path
    shipped = labs_dir() / f"{name}.yaml"
    if "/" not in name and shipped.exists():
        return shipped
    raise LabError(f"{name}: no such lab file", hint="give a path to a .yaml lab file, or a shipped lab name")


def load_text(text: str, file: str, schema: dict[str, Any] | None = None) -> Spec:
    """Parse and schema-check (the lab schema unless another is given); SpecError lists every problem."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        raise SpecError(
            [Problem(f"YAML syntax: {err.problem}", file, line, col, "check indentation and quoting")]
        ) from None
    if root is None:
        raise SpecError([Problem("the file is empty", file, 1, 1, "start with `name: mylab`")])
    builder = _Builder(file)
    data = builder.build(root, ())
    spec = Spec(data if isinstance(data, dict) else {}, file, builder.positions)
    problems = builder.problems + schema_problems(spec, data, schema or lab_schema())
    if problems:
        raise SpecError(problems)
    return spec


def load(name: str) -> Spec:
    path = resolve_path(name)
    try:
        text = path.read_text()
    except OSError as err:
        raise LabError(f"{path}: cannot read: {err.strerror}") from None
    return load_text(text, str(path))


@cache
def lab_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((schemas_dir() / "lab.schema.json").read_text())
    return schema


def schema_problems(spec: Spec, data: Any, schema: dict[str, Any]) -> list[Problem]:
    validator = jsonschema.Draft202012Validator(schema)
    problems = []
    for error in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
        path = tuple(error.absolute_path)
        hint = error.schema.get("description", "") if isinstance(error.schema, dict) else ""
        problems.append(spec.problem(path, _describe(error), hint))
    return problems


def _describe(error: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "lab"
    if error.validator == "additionalProperties":
        return f"{where}: {error.message.replace('Additional properties are not allowed', 'unknown key')}"
    return f"{where}: {error.message}"


def spec_text(spec: Spec) -> str:
    """The spec as YAML: what a lab keeps in its router, and what `render` writes there."""
    return yaml.safe_dump(spec.data, sort_keys=False)
