"""`up` says how far it is: counts for a terminal's bars (containers created, nodes configured,
iptables rules, pods serving), plain lines in a pipe, nothing with -q. The engine is replaced by a
recorder here: what is under test is what `up` reports, not what Docker does."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from typing import Any

import pytest
from rich.console import Console

from labbuilder.cli import tools
from labbuilder.compile.netfilter import parse_save
from labbuilder.compile.ops import Iptables
from labbuilder.compile.plan import compile_plan
from labbuilder.lifecycle import up
from labbuilder.lifecycle.progress import WHAT, Count
from labbuilder.spec.lab_file import resolve_file
from tests.conftest import LABS

PLAN = compile_plan(resolve_file(str(LABS / "kthw.yaml"), "progress")[1].lab)
KEYS = [c.key for c in PLAN.containers]


@dataclass
class FakeHandle:
    """What ensure_containers, apply_plan and wait_until_serving ask of a lab, recorded."""

    containers: dict[str, Any] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    engine: Any = field(default_factory=lambda: type("FakeEngine", (), {"name": "local"})())

    def create(self, spec: Any, labels: dict[str, str], image: str) -> None:
        self.calls.append(("create", spec.key))

    def put_files(self, key: str, files: dict[str, str]) -> None:
        self.calls.append(("put_files", key))

    def enter(self, key: str, argv: list[str]) -> None:
        self.calls.append(("wait", key))


class FakeApplier:
    def __init__(self, handle: FakeHandle):
        self.handle = handle

    def build(self, key: str, ops: Any) -> None:
        self.handle.calls.append(("build", key))

    def apply(self, key: str, ops: Any) -> None:
        self.handle.calls.append(("apply", key))

    def uplinks(self, key: str, ops: Any) -> None:
        self.handle.calls += [("uplink", op.describe()) for op in ops]


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch) -> FakeHandle:
    monkeypatch.setattr(up, "Applier", FakeApplier)
    monkeypatch.setattr(up, "churn", lambda *args: contextlib.nullcontext())
    return FakeHandle()


def _up(handle: FakeHandle, counts: Any) -> list[str]:
    lines: list[str] = []
    up.ensure_containers(handle, PLAN, lines.append, tag="image", spec_copy="spec", counts=counts)  # type: ignore[arg-type]
    up.apply_plan(handle, PLAN, KEYS, lines.append, counts)  # type: ignore[arg-type]
    return lines


def test_up_counts_every_kind_of_work_to_its_end(fake_engine: FakeHandle) -> None:
    events: list[Count] = []
    lines = _up(fake_engine, events.append)
    pods = sum(len(node.pods) for node in PLAN.lab.nodes)
    rules = sum(
        len(rule_list)
        for ops in PLAN.steps.values()
        for op in ops
        if isinstance(op, Iptables)
        for table in parse_save(op.payload).values()
        for rule_list in table.chains.values()
    )
    last = {e.what: e for e in events}
    assert last == {
        "containers": Count("containers", 7, 7),
        "nodes": Count("nodes", 7, 7),
        "rules": Count("rules", rules, rules),
        "pods": Count("pods", pods, pods),
    }
    assert rules > 50 and pods == 7
    # each kind is announced at 0 (a bar knows its size at once), in the order a front end shows them,
    # and counts only grow
    assert [e.what for e in events if e.done == 0] == list(WHAT)
    for what in WHAT:
        done = [e.done for e in events if e.what == what]
        assert done == sorted(done) and done[0] == 0
    # no per-node lines when counts are drawn; the lines that are not counts stay
    assert lines == ["creating 7 containers"]


def test_without_counts_up_prints_todays_lines(fake_engine: FakeHandle) -> None:
    lines = _up(fake_engine, None)
    assert lines[0] == "creating 7 containers"
    assert sorted(lines[1:]) == sorted(f"{key}: configured" for key in KEYS)
    assert ("create", "router") in fake_engine.calls and ("build", "worker-0") in fake_engine.calls


def test_a_pipe_gets_plain_lines_and_no_counts(capsys: pytest.CaptureFixture[str]) -> None:
    assert not tools.draws_bars()  # pytest's stderr is not a terminal
    with tools.live_progress() as (lines, counts):
        lines("creating 7 containers")
    assert counts is None
    assert capsys.readouterr().err == "» creating 7 containers\n"
    with tools.live_progress(quiet=True) as (lines, counts):
        lines("creating 7 containers")
    assert counts is None and capsys.readouterr().err == ""


def test_ci_and_dumb_terminals_get_no_bars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    monkeypatch.setenv("CI", "true")
    assert not tools.draws_bars()
    monkeypatch.delenv("CI")
    monkeypatch.setenv("TERM", "dumb")
    assert not tools.draws_bars()


def test_the_bars_show_each_count() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100, color_system=None)
    with tools.progress_bars(console, auto_refresh=False) as progress:
        bars = tools._Bars(progress)
        bars.line("lab big exists: converging")
        for what, total in (("containers", 51), ("nodes", 51), ("rules", 8000), ("pods", 1000)):
            bars.count(Count(what, 0, total))  # type: ignore[arg-type]
            bars.count(Count(what, total, total))  # type: ignore[arg-type]
        progress.refresh()
    text = out.getvalue()
    assert "» lab big exists: converging" in text
    for label in ("containers created", "nodes configured", "iptables rules", "pods serving"):
        assert label in text
    assert "1000/1000" in text and "8000/8000" in text and "51/51" in text


def test_a_fresh_lab_is_built_as_each_container_appears_with_the_same_operations(fake_engine: FakeHandle) -> None:
    """build_fresh overlaps configuring with creating: the router is built before any node's
    uplink, each node is built after its uplink, and the work done equals the two-phase path's."""
    events: list[Count] = []
    lines: list[str] = []
    up.build_fresh(fake_engine, PLAN, "image", "spec", lines.append, events.append)  # type: ignore[arg-type]
    fresh = fake_engine.calls
    two_phase = FakeHandle()
    _up(two_phase, None)
    assert sorted(fresh) == sorted(two_phase.calls)
    router_built = fresh.index(("build", "router"))
    assert all(fresh.index(("build", key)) > router_built for key in KEYS[1:])
    assert min(i for i, call in enumerate(fresh) if call[0] == "uplink") > router_built
    assert fresh.index(("put_files", "router")) > fresh.index(("create", "router"))
    last = {e.what: e.done for e in events}
    assert last == {"containers": 7, "nodes": 7, "rules": last["rules"], "pods": 7} and last["rules"] > 50
    assert lines == ["creating 7 containers"]
