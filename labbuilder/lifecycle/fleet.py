"""A fleet: N copies of one lab file, `<prefix>-01…`, spread over one or more Docker engines.

A fleet has no file and no daemon of its own: it is the labs whose containers carry
`labbuilder.fleet=<prefix>` (each lab keeps its spec copy in its router, as every lab does), so
any machine that reaches the engines can list, check, reset or remove it. Placement is a pure
function of what the engines report (free memory, running labs) and which members exist;
everything else reuses the single-lab lifecycle (`up`, `reset`, `down`, checks) per member,
with bounded parallelism per engine.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from labbuilder.compile.labels import LABEL_FLEET
from labbuilder.compile.plan import compile_plan
from labbuilder.engine.kernel import host_kernel
from labbuilder.engine.runtime import ContainerInfo, Engine
from labbuilder.errors import LabError
from labbuilder.lifecycle import lab as single
from labbuilder.lifecycle.exercise import start_exercise
from labbuilder.lifecycle.reset import ResetResult, reset_lab
from labbuilder.lifecycle.up import up
from labbuilder.observe import checks as grading
from labbuilder.spec.exercise import load_exercise
from labbuilder.spec.lab_file import resolve_file

T = TypeVar("T")
CONTAINER_MEMORY = 8 << 20  # bytes a lab container takes, about (KTHW's 7 take ≈45 MB)
PARALLEL = 4  # labs started at once per engine
PREFIX = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")


# -- names ----------------------------------------------------------------------------------
def member_name(prefix: str, index: int) -> str:
    """The index-th lab of fleet `prefix` (1-based): `kthw-01` … `kthw-99`, `kthw-100`."""
    return f"{prefix}-{index:02d}"


def member_index(prefix: str, lab: str) -> int | None:
    """The index a member's name holds, or None when the name is not one of the fleet's."""
    match = re.fullmatch(re.escape(prefix) + r"-(\d{2,})", lab)
    return int(match.group(1)) if match and int(match.group(1)) > 0 else None


def check_prefix(prefix: str) -> str:
    if not PREFIX.match(prefix):
        raise LabError(
            f"fleet name {prefix!r} is not a valid prefix",
            hint="lowercase letters, digits and '-', at most 32 characters, e.g. --prefix kthw",
        )
    return prefix


# -- placement (pure) -----------------------------------------------------------------------
@dataclass(frozen=True)
class EngineLoad:
    """What placement needs to know of an engine."""

    name: str
    free_memory: int  # bytes the engine's host has available
    labs: int  # labs running there now, any fleet's or none


@dataclass(frozen=True)
class Placement:
    lab: str
    engine: str
    reason: str
    new: bool


@dataclass(frozen=True)
class FleetPlan:
    prefix: str
    place: tuple[Placement, ...]  # every member the fleet will have, by index
    remove: tuple[tuple[str, str], ...]  # (lab, engine), highest index first

    def count(self, engine: str) -> int:
        return sum(p.engine == engine for p in self.place)


def _gib(n: float) -> str:
    return f"{n / (1 << 30):.1f} GiB"


def place(
    prefix: str, count: int, loads: Sequence[EngineLoad], members: Mapping[str, str], lab_memory: int
) -> FleetPlan:
    """Where each of the fleet's `count` labs lives. Members that exist stay where they are
    (`members`: lab → engine); members beyond `count` go, the highest-numbered first; each missing
    one goes to the engine that leaves the most free memory per running lab — so equal engines take
    turns and a busier or smaller one takes fewer. LabError when no engine has the memory."""
    if count < 0:
        raise LabError("--count must be 0 or more")
    if not loads:
        raise LabError("no engine to place the fleet on", hint="--engines local,OTHER")
    wanted = [member_name(prefix, i) for i in range(1, count + 1)]
    doomed = sorted((lab for lab in members if lab not in wanted), key=lambda lab: member_index(prefix, lab) or 0)
    remove = tuple((lab, members[lab]) for lab in reversed(doomed))
    free = {load.name: load.free_memory for load in loads}
    labs = {load.name: load.labs for load in loads}
    for _, engine in remove:
        if engine in labs:
            labs[engine] = max(0, labs[engine] - 1)
            free[engine] += lab_memory
    placed = []
    for lab in wanted:
        if lab in members:
            placed.append(Placement(lab, members[lab], "already there", new=False))
            continue
        room = [name for name in free if free[name] >= lab_memory]
        if not room:
            best = max(free, key=lambda name: free[name])
            raise LabError(
                f"no engine has memory for lab {lab}: it needs about {_gib(lab_memory)}, "
                f"the most any engine has free is {_gib(free[best])} ({best})",
                hint="a smaller --count, or more engines with --engines",
            )
        # The engine whose share of free memory per lab stays largest once this lab is there.
        engine = max(room, key=lambda name: ((free[name] - lab_memory) / (labs[name] + 1), free[name]))
        reason = f"{labs[engine]} labs running there, {_gib(free[engine])} free: the most memory per lab"
        placed.append(Placement(lab, engine, reason, new=True))
        labs[engine] += 1
        free[engine] -= lab_memory
    return FleetPlan(prefix, tuple(placed), remove)


# -- the engines ----------------------------------------------------------------------------
def open_engines(names: Sequence[str]) -> dict[str, Engine]:
    """The engines by name: `local` is the default engine (DOCKER_HOST, or the local socket), any
    other name a Docker context (`docker context ls`); none given: the engine the user chose
    (`--context`, else Docker's own order)."""
    if not names:
        engine = Engine()
        return {engine.name: engine}
    return {name: Engine(name) for name in dict.fromkeys(names)}


@dataclass(frozen=True)
class Member:
    """A lab of a fleet, as its engine reports it."""

    lab: str
    engine: str
    fleet: str
    running: int  # containers running
    total: int  # containers found

    @property
    def state(self) -> str:
        if self.running == self.total:
            return "running"
        return "stopped" if not self.running else f"degraded ({self.running}/{self.total} running)"


def _labs(infos: Sequence[ContainerInfo]) -> dict[str, list[ContainerInfo]]:
    labs: dict[str, list[ContainerInfo]] = {}
    for info in infos:
        labs.setdefault(info.lab, []).append(info)
    return labs


class Fleet:
    """The engines a fleet command works with, opened once, and the fleet's members on them."""

    def __init__(self, prefix: str | None, engines: Sequence[str] = (), parallel: int = PARALLEL):
        self.prefix = check_prefix(prefix) if prefix else None
        self.engines = open_engines(engines)
        self.parallel = max(1, parallel)

    def containers(self) -> dict[str, list[ContainerInfo]]:
        with ThreadPoolExecutor(len(self.engines)) as pool:
            futures = {name: pool.submit(engine.containers) for name, engine in self.engines.items()}
            return {name: future.result() for name, future in futures.items()}

    def members(self) -> list[Member]:
        """Every lab of this fleet (or of every fleet, without a prefix), by name."""
        found = []
        for engine, infos in self.containers().items():
            for lab, parts in _labs(infos).items():
                fleet = next((i.fleet for i in parts if i.fleet), "")
                if fleet and (self.prefix is None or fleet == self.prefix):
                    found.append(Member(lab, engine, fleet, sum(i.running for i in parts), len(parts)))
        return sorted(found, key=lambda m: (m.fleet, member_index(m.fleet, m.lab) or 0, m.lab))

    def require_members(self, labs: Sequence[str] = ()) -> list[Member]:
        members = self.members()
        if not members:
            raise LabError(
                f"no fleet named {self.prefix} on {', '.join(self.engines)}",
                hint="`labbuilder fleet ls` lists the fleets; --engines names the engines to look on",
            )
        unknown = sorted(set(labs) - {m.lab for m in members})
        if unknown:
            raise LabError(f"not labs of fleet {self.prefix}: {', '.join(unknown)}", hint="`labbuilder fleet ls`")
        return [m for m in members if not labs or m.lab in labs]

    def each(self, members: Sequence[Member], work: Callable[[Member], T]) -> dict[str, tuple[T | None, str | None]]:
        """work(member) for every member, `parallel` at a time per engine, engines side by side;
        lab → (result, None) or (None, the error a user can act on)."""
        pools = {name: ThreadPoolExecutor(self.parallel) for name in {m.engine for m in members}}
        try:
            futures: dict[str, Future[T]] = {m.lab: pools[m.engine].submit(work, m) for m in members}
            return {lab: _outcome(f) for lab, f in futures.items()}
        finally:
            for pool in pools.values():
                pool.shutdown()


def _outcome(future: Future[Any]) -> tuple[Any, str | None]:
    try:
        return future.result(), None
    except LabError as err:
        return None, str(err)


# -- up -------------------------------------------------------------------------------------
Step = Callable[[str, str], None]  # (lab, what it is doing)
Done = Callable[[str, "str | None"], None]  # (lab, error or None)


def _nothing(*_: Any) -> None:
    pass


@dataclass
class UpReport:
    plan: FleetPlan
    removed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def plan_up(fleet: Fleet, path: str, count: int) -> FleetPlan:
    """Validate the lab file (nothing is made from a bad one), read the engines, place the fleet."""
    assert fleet.prefix is not None
    _, resolved = resolve_file(path, member_name(fleet.prefix, 1), host_kernel())
    lab_memory = CONTAINER_MEMORY * len(compile_plan(resolved.lab).containers)
    containers = fleet.containers()
    members: dict[str, str] = {}
    loads = []
    for engine, infos in containers.items():
        labs = _labs(infos)
        for lab, parts in labs.items():
            in_fleet = any(i.fleet == fleet.prefix for i in parts)
            if in_fleet:
                members[lab] = engine
            elif member_index(fleet.prefix, lab) is not None:
                raise LabError(
                    f"lab {lab} on engine {engine} has a fleet member's name but is not in fleet {fleet.prefix}",
                    hint=f"`labbuilder down {lab}`, or another --prefix",
                )
        running = sum(any(i.running for i in parts) for parts in labs.values())
        loads.append(EngineLoad(engine, fleet.engines[engine].free_memory(), running))
    return place(fleet.prefix, count, loads, members, lab_memory)


def kept_file(fleet: Fleet, folder: str) -> str:
    """The lab file the fleet's labs keep (the lowest-numbered running member's copy), written into
    `folder`: a fleet grows or shrinks from any machine, without the file it was made from."""
    for member in fleet.require_members():
        if member.state == "running":
            text = fleet.engines[member.engine].lab(member.lab).read_spec()
            path = Path(folder) / f"{fleet.prefix}.yaml"
            path.write_text(text)
            return str(path)
    raise LabError(
        f"no lab of fleet {fleet.prefix} is running to read its lab file from",
        hint="give the lab file: `labbuilder fleet up LAB.yaml …`",
    )


def fleet_up(fleet: Fleet, path: str, plan: FleetPlan, step: Step = _nothing, done: Done = _nothing) -> UpReport:
    """Remove the members beyond the count, then bring every member up (a new one is created, an
    existing one converges), `parallel` at a time per engine."""
    assert fleet.prefix is not None
    report = UpReport(plan)
    for lab, engine in plan.remove:
        step(lab, f"removing it from {engine}")
        single.down(lab, fleet.engines[engine])
        report.removed.append(lab)
        done(lab, None)
    labels = {LABEL_FLEET: fleet.prefix}

    def bring_up(member: Member) -> None:
        try:
            up(path, member.lab, lambda line: step(member.lab, line), fleet.engines[member.engine], labels)
        except LabError as err:
            done(member.lab, str(err))
            raise
        done(member.lab, None)

    targets = [Member(p.lab, p.engine, fleet.prefix, 0, 0) for p in plan.place]
    for lab, (_, error) in fleet.each(targets, bring_up).items():
        if error:
            report.failed[lab] = error
    return report


# -- the other verbs ------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckReport:
    lab: str
    engine: str
    results: tuple[grading.Result, ...]
    error: str | None = None  # the lab could not be checked at all

    @property
    def passed(self) -> bool:
        return self.error is None and all(r.passed for r in self.results)

    def as_json(self) -> dict[str, Any]:
        return {
            "lab": self.lab,
            "engine": self.engine,
            "passed": self.passed,
            "error": self.error,
            "checks": [asdict(r) for r in self.results],
        }


def check_member(fleet: Fleet, member: Member, exercise_file: str | None = None) -> CheckReport:
    """Run one member's checks (its own, or an exercise's); a lab that cannot be checked says why."""
    handle = fleet.engines[member.engine].lab(member.lab)
    try:
        handle.require()
        model = handle.model()
        to_run = load_exercise(exercise_file, model).checks if exercise_file else model.checks
        results = grading.run_checks(model, to_run, grading.exec_in(handle))
    except LabError as err:
        return CheckReport(member.lab, member.engine, (), str(err))
    return CheckReport(member.lab, member.engine, tuple(results))


def fleet_check(fleet: Fleet, members: Sequence[Member], exercise_file: str | None = None) -> list[CheckReport]:
    found = fleet.each(members, lambda m: check_member(fleet, m, exercise_file))
    return [found[m.lab][0] or CheckReport(m.lab, m.engine, (), found[m.lab][1]) for m in members]


def fleet_reset(fleet: Fleet, members: Sequence[Member]) -> dict[str, tuple[ResetResult | None, str | None]]:
    return fleet.each(members, lambda m: reset_lab(m.lab, engine=fleet.engines[m.engine]))


def fleet_exercise(
    fleet: Fleet, members: Sequence[Member], exercise_file: str
) -> dict[str, tuple[str | None, str | None]]:
    """Start the exercise on every member: its setup runs in each; lab → (title, error)."""
    return fleet.each(members, lambda m: start_exercise(fleet.engines[m.engine].lab(m.lab), exercise_file).title)


def fleet_down(fleet: Fleet, members: Sequence[Member]) -> dict[str, tuple[list[str] | None, str | None]]:
    return fleet.each(members, lambda m: single.down(m.lab, fleet.engines[m.engine]))


def junit_files(reports: Sequence[CheckReport]) -> dict[str, str]:
    """One JUnit XML file per lab (what CI servers read): file name → text."""
    return {f"{r.lab}.xml": grading.junit_xml(r.lab, _with_error(r)) for r in reports}


def junit_one(prefix: str, reports: Sequence[CheckReport]) -> str:
    """The whole fleet in one JUnit file: a <testsuites> holding one suite per lab."""
    return grading.junit_suites(f"labbuilder.{prefix}", [(r.lab, _with_error(r)) for r in reports])


def _with_error(report: CheckReport) -> list[grading.Result]:
    """A lab that could not be checked is one failed case, not an empty (green) suite."""
    if report.error is None:
        return list(report.results)
    return [grading.Result("lab reachable", "lab", f"lab {report.lab} on {report.engine}", False, report.error)]
