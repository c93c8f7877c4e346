"""Loading: YAML with positions, schema errors located at the offending key."""

from __future__ import annotations

import pytest

from labbuilder.errors import SpecError
from labbuilder.spec.load import load, load_text

MINIMAL = "name: mini\nnodes:\n  - name: worker-0\n"


def problems_of(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_text(text, "lab.yaml")
    return [str(p) for p in info.value.problems]


def test_minimal_lab_loads_with_positions():
    spec = load_text(MINIMAL, "lab.yaml")
    assert spec.data == {"name": "mini", "nodes": [{"name": "worker-0"}]}
    assert spec.positions[("nodes", 0, "name")] == (3, 5)


def test_unknown_key_is_located_at_its_line():
    text = "name: mini\nnodes:\n  - name: worker-0\n    colour: red\n"
    [problem] = problems_of(text)
    assert problem.startswith("lab.yaml:3:5: nodes.0: unknown key")
    assert "colour" in problem


def test_wrong_type_names_the_field_and_gives_the_schema_hint():
    [problem] = problems_of("name: mini\ncni: {mode: weave}\nnodes: [{name: a}]\n")
    assert problem.startswith("lab.yaml:2:7: cni.mode:")
    assert "bridge (CNI bridge plugin)" in problem


def test_yaml_syntax_error_points_at_the_line():
    [problem] = problems_of("name: mini\nnodes: [\n")
    assert problem.startswith("lab.yaml:3:1: YAML syntax")


def test_duplicate_keys_are_reported():
    [problem] = problems_of("name: mini\nname: other\nnodes: [{name: a}]\n")
    assert problem == "lab.yaml:2:1: duplicate key 'name' (each key may appear once per mapping)"


def test_empty_file_is_an_error():
    assert problems_of("") == ["lab.yaml:1:1: the file is empty (start with `name: mylab`)"]


def test_shipped_labs_load_by_name_and_validate_against_the_schema():
    for name in ("kthw", "kthw-nomasq"):
        assert load(name).data["name"] == name


def test_keys_are_names_even_when_yaml_would_read_a_boolean():
    spec = load_text("name: mini\nnodes: [{name: a}]\nchecks: [{on: router, route: default}]\n", "lab.yaml")
    assert spec.data["checks"] == [{"on": "router", "route": "default"}]
