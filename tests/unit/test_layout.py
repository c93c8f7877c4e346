"""The house rules: folders name the pipeline's stages, imports point down only, no cycles, one
door to Docker. Read from the source with `ast`, so a function-level import counts as much as a
top-level one: hiding an upward import inside a function does not get past this test."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "labbuilder"
BASE = {"errors", "resources", "__main__"}  # the floor (and the entry point): labbuilder/*.py
# What each stage may import besides itself and the floor (docs/design.md draws the same picture).
ALLOWED: dict[str, set[str]] = {
    "spec": set(),
    "compile": {"spec"},
    "engine": {"spec", "compile"},
    "observe": {"spec", "compile", "engine"},
    "present": {"spec", "compile", "observe"},
    "lifecycle": {"spec", "compile", "engine", "observe"},
    "cli": {"spec", "compile", "engine", "observe", "present", "lifecycle"},
}
ENGINE_ONLY = {"docker", "pyroute2"}  # the only code that talks to Docker and to netlink


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(path: Path) -> set[str]:
    """Every module this file imports, anywhere in it (labbuilder's resolved to module names)."""
    names: set[str] = set()
    known = modules()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                names.add(full if full in known else node.module)
    return names


def stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] not in BASE else ""


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: {m for m in imports(path) if m in known and m != name} for name, path in known.items()}


def test_the_folders_name_the_stages():
    stages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert stages == set(ALLOWED)
    loose = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__", *BASE}
    assert not loose, f"modules outside the stages: {loose}"


def test_imports_point_down_only():
    upward = []
    for name, targets in graph().items():
        here = stage(name)
        if not here:
            assert all(stage(t) == "" or name == "labbuilder.__main__" for t in targets), (name, targets)
            continue
        for target in targets:
            there = stage(target)
            if there and there != here and there not in ALLOWED[here]:
                upward.append(f"{name} → {target}")
    assert not upward, "imports that point up or sideways:\n" + "\n".join(sorted(upward))


def test_compile_never_imports_the_engine_and_present_stays_pure():
    for name, targets in graph().items():
        if stage(name) in ("spec", "compile", "present"):
            assert not {t for t in targets if stage(t) in ("engine", "lifecycle")}, name


def test_no_import_cycles():
    edges = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                pytest.fail("import cycle: " + " → ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_only_the_engine_talks_to_docker_and_netlink():
    offenders = []
    for name, path in modules().items():
        if stage(name) == "engine":
            continue
        for imported in imports(path):
            if imported.split(".")[0] in ENGINE_ONLY:
                offenders.append(f"{name} imports {imported}")
    assert not offenders, "\n".join(offenders)


def test_no_module_shadows_the_standard_library():
    import sys

    shadows = {Path(p).stem for p in modules().values()} & set(sys.stdlib_module_names)
    assert not shadows - {"__init__", "__main__"}, shadows


def test_nothing_outside_cni_asks_which_mode_it_is():
    for name, path in modules().items():
        if ".compile.cni" in name or name.endswith("spec.resolve") or name.endswith("spec.model"):
            continue
        text = path.read_text()
        assert "cni.mode ==" not in text and "cni.mode !=" not in text, name
