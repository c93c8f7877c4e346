"""Bad lab files never crash: mutants of every shipped lab end in `ok` or in located problems.

The mutations (wrong types, huge numbers, unicode, deep nesting, duplicate keys, YAML bombs,
invalid UTF-8, unknown tags, byte flips and truncations, and schema-valid changes of
addresses, ranges, names and counts for the resolver) come from bench/fuzz.py, which runs
the same generator 10,000 times; here Hypothesis drives a bounded slice of it on every run.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labbuilder.cli.main import main
from labbuilder.compile.plan import compile_plan
from labbuilder.errors import SpecError
from labbuilder.spec.load import load_bytes
from labbuilder.spec.resolve import build_model
from tests.conftest import LABS, ROOT

FILE = "fuzz.yaml"


def _bench_fuzz() -> ModuleType:
    """bench/ is scripts, not a package: load the generator from its file."""
    spec = importlib.util.spec_from_file_location("bench_fuzz", ROOT / "bench" / "fuzz.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


fuzz = _bench_fuzz()
SHIPPED = [path.read_bytes() for path in sorted(LABS.glob("*.yaml"))]


def validate(data: bytes) -> None:
    """What `validate` runs (in under a second), then the planner on what it accepts: SpecError or nothing."""
    start = time.perf_counter()
    try:
        lab = build_model(load_bytes(data, FILE, base=LABS)).lab  # the manifests of labs/netpol.yaml
    except SpecError as err:
        assert err.problems
        for problem in err.problems:
            assert fuzz.located(str(problem), FILE), f"not located on one line: {problem!s}"
        return
    finally:
        assert time.perf_counter() - start < 1.0
    compile_plan(lab)


def slice_of(examples: int):  # the whole file stays at ~300 examples, a few seconds
    return settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)


@slice_of(90)
@given(st.randoms(use_true_random=False), st.sampled_from(SHIPPED))
def test_structural_mutants(rng, lab):
    validate(fuzz.mutate(rng, lab, "structural")[1])


@slice_of(100)
@given(st.randoms(use_true_random=False), st.sampled_from(SHIPPED))
def test_semantic_mutants_that_reach_the_resolver(rng, lab):
    validate(fuzz.mutate(rng, lab, "semantic")[1])


@slice_of(80)
@given(st.randoms(use_true_random=False), st.sampled_from(SHIPPED))
def test_byte_level_mutants(rng, lab):
    validate(fuzz.mutate(rng, lab, "textual")[1])


@slice_of(30)
@given(st.randoms(use_true_random=False), st.sampled_from(SHIPPED))
def test_bombs(rng, lab):
    validate(fuzz.mutate(rng, lab, "bombs")[1])


@pytest.mark.parametrize("lab", sorted(LABS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_lab_is_valid_as_it_is(lab):
    validate(lab.read_bytes())


NASTY = {
    "alias-bomb": fuzz.alias_bomb(12, 12).encode(),
    "self-alias": b"name: x\nnodes: &a [*a]\n",
    "not-utf8": b"name: x\nnodes: [{name: \xff}]\n",
    "nul": b"name: x\x00\nnodes: [{name: a}]\n",
    "deep": b"name: x\nnodes: " + b"[" * 100_000 + b"]" * 100_000 + b"\n",
    "binary-tag": b"name: x\nnodes: [{name: a}]\ndescription: !!binary AAAA\n",
    "bad-int-tag": b"name: x\nnodes: [{name: a}]\nworkloads: [{name: w, replicas: !!int x}]\n",
    "huge-int": b"name: x\nnodes: [{name: a}]\nworkloads: [{name: w, replicas: " + b"9" * 5000 + b"}]\n",
    "float-replicas": b"name: x\nnodes: [{name: a}]\nworkloads: [{name: w, replicas: 2.0}]\n",
    "bad-date": b"name: x\nnodes: [{name: a}]\ncluster: {dnsIP: 9999-99-99}\n",
    "list-key": b"name: x\nnodes: [{[a]: 1}]\n",
    "router-node": b"name: x\nnodes: [{name: router}]\n",
    "tiny-services": b"name: x\ncluster: {serviceCIDR: 255.255.255.255/32}\nnodes: [{name: a}]\n",
    "bad-port": b"name: x\nnodes: [{name: a}]\nchecks: [{from: node/a, to: '10.0.0.1:8a'}]\n",
}


@pytest.mark.parametrize("name", NASTY)
def test_validate_on_the_command_line_exits_1_with_located_lines(name, tmp_path: Path):
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(NASTY[name])
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    lines = result.stderr.splitlines()
    assert lines and all(fuzz.located(line, str(path)) for line in lines), result.stderr


def test_an_exercise_file_that_is_not_text_is_a_located_error(tmp_path):
    """Exercise files go through the lab file's loader: the same limits, the same located errors."""
    from labbuilder.errors import SpecError
    from labbuilder.spec.exercise import load_exercise
    from labbuilder.spec.lab_file import resolve_file

    lab = resolve_file("kthw")[1].lab
    bad = tmp_path / "ex.yaml"
    bad.write_bytes(b"title: broken\n\xff\xfe checks: []\n")
    try:
        load_exercise(str(bad), lab)
    except SpecError as err:
        assert err.problems and all(str(bad) in str(p) and ":2:" in str(p) for p in err.problems), err.problems
    else:
        raise AssertionError("a file that is not UTF-8 was accepted")
