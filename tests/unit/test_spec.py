"""Loading: YAML with positions, schema errors located at the offending key."""

from __future__ import annotations

import pytest
import yaml

from labbuilder.errors import LabError, SpecError
from labbuilder.spec import load as loader
from labbuilder.spec.load import MAX_BYTES, load, load_bytes, load_text
from tests.conftest import LABS

MINIMAL = "name: mini\nnodes:\n  - name: worker-0\n"


def problems_of(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_text(text, "lab.yaml")
    return [str(p) for p in info.value.problems]


def test_minimal_lab_loads_with_positions():
    spec = load_text(MINIMAL, "lab.yaml")
    assert spec.data == {"name": "mini", "nodes": [{"name": "worker-0"}]}
    assert spec.positions[("nodes", 0, "name")] == (3, 5)


def test_unknown_key_is_located_at_the_key():
    text = "name: mini\nnodes:\n  - name: worker-0\n    colour: red\n"
    [problem] = problems_of(text)
    assert problem == "lab.yaml:4:5: nodes.0: unknown key 'colour' (known keys: name, role, ip, podCIDR)"


def test_a_top_level_typo_is_one_message_at_the_key_with_a_suggestion():
    assert problems_of("description: x\nnam: mini\nnodes: [{name: a}]\n") == [
        "lab.yaml:2:1: lab: unknown key 'nam' (did you mean 'name'?)"
    ]


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


def bytes_problems(data: bytes) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_bytes(data, "lab.yaml")
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize("path", sorted(LABS.glob("*.yaml")), ids=lambda p: p.name)
def test_the_c_parser_gives_the_pure_python_positions(path, monkeypatch):
    fast = load_text(path.read_text(), "lab.yaml", base=LABS)
    monkeypatch.setattr(loader, "_Loader", yaml.SafeLoader)
    slow = load_text(path.read_text(), "lab.yaml", base=LABS)
    assert (fast.data, fast.positions, fast.origins) == (slow.data, slow.positions, slow.origins)
    raw = yaml.safe_load(path.read_text())
    if "networkPolicies" in raw:  # `file:` items are read from their manifests: PyYAML knows nothing of that
        raw["networkPolicies"] = fast.data["networkPolicies"]
    assert fast.data == raw | {"checks": fast.data.get("checks", [])}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"name: mini\nnodes: [{name: \xff}]\n", "lab.yaml:2:16: not UTF-8 text: byte 0xff (save the file as UTF-8)"),
        (b"name: mini\x00\n", "lab.yaml:1:11: a NUL byte: this is not a text file (a lab file is UTF-8 text)"),
        (
            b"name: mini\n  \x1b[31m\n",
            "lab.yaml:2:3: control character U+001B is not allowed "
            "(remove it, or write it as an escape in a double-quoted string)",
        ),
        (b"x" * (MAX_BYTES + 1), "lab.yaml:1:1: the file is larger than 1 MiB"),
    ],
)
def test_bytes_that_are_not_yaml_text_are_located(data, expected):
    assert bytes_problems(data) == [expected]


def test_a_utf8_bom_is_fine():
    assert load_bytes(b"\xef\xbb\xbf" + MINIMAL.encode(), "lab.yaml").data["name"] == "mini"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: mini\nnodes: &a [*a]\n", "lab.yaml:2:12: alias *a is inside its own anchor &a (it never ends)"),
        ("name: mini\nnodes: *a\n", "lab.yaml:2:8: alias *a has no anchor &a before it"),
        ("name: mini\nnodes: [{[a]: 1}]\n", "lab.yaml:2:10: a key must be a plain name, not a list or mapping"),
        ("name: mini\nnodes: [{*x : 1}]\n", "lab.yaml:2:10: a key must be a plain name, not an alias"),
        ("name: mini\n---\nname: b\n", "lab.yaml:2:1: a lab file holds one YAML document (remove the `---`)"),
        ("- name: mini\n", "lab.yaml:1:1: the file holds a list, not a mapping of keys (start with `name: mylab`)"),
        ("# only a comment\n", "lab.yaml:1:1: the file is empty (start with `name: mylab`)"),
    ],
)
def test_yaml_structure_problems(text, expected):
    [problem] = problems_of(text)
    assert problem.startswith(expected)


def test_an_alias_bomb_is_refused_quickly():
    text = "a0: &a0 [lol]\n" + "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10))
    [problem] = problems_of(text + "name: mini\nnodes: [{name: a}]\n")
    assert problem.startswith("lab.yaml:5:35: aliases expand to more than 10,000 values")


def test_small_aliases_are_fine():
    spec = load_text("name: mini\nnodes: [&n {name: a}]\nworkloads: [{name: w, nodes: [&w a]}]\ndescription: *w\n", "l")
    assert spec.data["description"] == "a"


@pytest.mark.parametrize(("depth", "col"), [(65, 71), (100_000, 1007)])  # libyaml stops the deepest itself
def test_nesting_is_bounded(depth, col):
    [problem] = problems_of("name: mini\nnodes: " + "[" * depth + "]" * depth + "\n")
    assert problem == f"lab.yaml:2:{col}: lists and mappings nested more than 64 deep (flatten it)"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("!!binary AAAA", "workloads.0.replicas: tag !!binary is not allowed"),
        ("!!python/object:os.system x", "workloads.0.replicas: tag !!python/object:os.system is not allowed"),
        ("!custom 1", "workloads.0.replicas: tag !custom is not allowed"),
        ("!!int x", "workloads.0.replicas: 'x' is not a valid !!int (remove the tag)"),
        ("!!set {a}", "workloads.0.replicas: tag !!set is not allowed"),
        ("1" * 5000, "workloads.0.replicas: a number of 5,000 characters"),
        ("9223372036854775808", "workloads.0.replicas: 9223372036854775808 is out of range"),
        ("0b_", "workloads.0.replicas: '0b_' is not a number (write digits, such as 80)"),
        ("2.0", "workloads.0.replicas: 2.0 is not of type 'integer' (a whole number, as Kubernetes reads it"),
        ("-1.5", "workloads.0.replicas: -1.5 is not of type 'integer'"),
        ("9999-99-99", "workloads.0.replicas: '9999-99-99' is not of type 'integer'"),
    ],
)
def test_only_plain_safe_values_are_read(value, message):
    [problem] = problems_of(f"name: mini\nnodes: [{{name: a}}]\nworkloads:\n  - name: w\n    replicas: {value}\n")
    assert problem.startswith("lab.yaml:5:") and message in problem


def test_timestamps_and_explicit_safe_tags_stay_what_they_say():
    spec = load_text("name: mini\nnodes: [{name: a}]\ndescription: 2024-01-01\ncni: {mtu: !!int 1500}\n", "l")
    assert spec.data["description"] == "2024-01-01" and spec.data["cni"]["mtu"] == 1500


@pytest.mark.parametrize("key", ["cni: {mtu: 1500.0}", "services: [{name: s, ports: [{port: 80.0}]}]"])
def test_floats_are_not_integers(key):
    [problem] = problems_of(f"name: mini\nnodes: [{{name: a}}]\n{key}\n")
    assert "is not of type 'integer'" in problem and problem.startswith("lab.yaml:3:")


def test_a_trailing_newline_does_not_pass_a_pattern():
    [problem] = problems_of('name: "mini\\n"\nnodes: [{name: a}]\n')
    assert problem.startswith("lab.yaml:1:1: name: 'mini\\n' does not match")
    assert "\n" not in problem


def test_missing_keys_point_at_their_mapping():
    assert problems_of("name: mini\nworkloads: [{replicas: 1}]\n") == [
        "lab.yaml:1:1: lab: missing key 'nodes'",
        "lab.yaml:2:13: workloads.0: missing key 'name' (lower case letters, digits and dashes (a DNS label))",
    ]


def test_one_message_per_value():
    [problem] = problems_of("name: mini\nnodes: [{name: a}]\nworkloads: [{name: w, replicas: -2.5}]\n")
    assert "is not of type 'integer'" in problem


def test_label_keys_and_values_are_checked_like_kubernetes():
    problems = problems_of("name: mini\nnodes: [{name: a}]\nworkloads: [{name: w, labels: {'a b': c, d: 'e f'}}]\n")
    assert problems[0].startswith("lab.yaml:3:32: workloads.0.labels: key 'a b' does not match")
    assert problems[1].startswith("lab.yaml:3:42: workloads.0.labels.d: 'e f' does not match")


def test_a_check_is_one_kind():
    [problem] = problems_of("name: mini\nnodes: [{name: a}]\nchecks: [{from: node/a, to: router, route: x}]\n")
    assert problem.startswith("lab.yaml:3:10: checks.0: matches none of the accepted forms (a check is one of")


def test_a_nul_in_a_lab_name_is_no_such_file():
    with pytest.raises(LabError, match="no such lab file"):
        load("bad\0name")


@pytest.mark.parametrize("escape", ["\\n", "\\v", "\\x85", "\\u2028", "\\r"])
def test_line_breaks_written_as_escapes_stay_escaped_in_messages(escape):
    text = f'name: mini\nnodes: [{{name: a}}]\nworkloads: [{{name: w, labels: {{"a{escape}b": !!binary x}}}}]\n'
    [problem] = problems_of(text)
    assert len(problem.splitlines()) == 1 and "tag !!binary is not allowed" in problem
