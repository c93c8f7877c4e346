"""`labbuilder fleet …`: many copies of one lab over one or more engines, managed as one."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from labbuilder.cli.tools import bold, console, user_errors

if TYPE_CHECKING:
    from labbuilder.lifecycle.fleet import Fleet, Member


def engines_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--engines",
        metavar="NAME,…",
        help="the engines: `local` (DOCKER_HOST, or this host's socket) and Docker context names; "
        "default: the one engine --context (or Docker) chooses",
    )(func)


def parallel_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--parallel", default=4, show_default=True, metavar="K", help="labs worked on at once per engine"
    )(func)


def prefix_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--prefix",
        "--fleet",
        "prefix",
        metavar="NAME",
        help="the fleet (its labs are NAME-01…); may be left out when the engines hold one fleet",
    )(func)


def _split(engines: str | None) -> list[str]:
    return [name.strip() for name in (engines or "").split(",") if name.strip()]


def open_fleet(prefix: str | None, engines: str | None, parallel: int = 4) -> Fleet:
    """The fleet named PREFIX, or the only one on the engines."""
    from labbuilder.errors import LabError
    from labbuilder.lifecycle.fleet import Fleet

    fleet = Fleet(prefix, _split(engines), parallel)
    if prefix is None:
        names = sorted({m.fleet for m in fleet.members()})
        if len(names) != 1:
            raise LabError(
                "which fleet? " + (f"the engines hold {', '.join(names)}" if names else "the engines hold none"),
                hint="--prefix NAME",
            )
        fleet.prefix = names[0]
    return fleet


class FleetProgress:
    """One display for the whole fleet: on a terminal a live bar over the fleet, with a line under it
    per lab being worked on (what it is doing now); otherwise (CI, a pipe) one line per finished lab."""

    def __init__(self, title: str, labs: dict[str, str]):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
        from rich.text import Text

        self.console = Console(stderr=True, markup=False, emoji=False, highlight=False)
        self.labs = labs  # lab → engine
        self.begun = time.monotonic()
        self.started: dict[str, float] = {}  # lab → when work on it began (its first step)
        self.doing: dict[str, str] = {}  # lab → its latest step, while it is worked on
        self.live = self.console.is_terminal
        doing = self.doing

        class Display(Progress):
            def get_renderables(self) -> Any:
                yield self.make_tasks_table(self.tasks)
                lines = [f"  {lab} [{labs.get(lab, '?')}]: {line}" for lab, line in sorted(doing.items())]
                if lines:
                    yield Text("\n".join(lines), style="dim", no_wrap=True, overflow="ellipsis")

        self.progress = Display(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            disable=not self.live,
        )
        self.total = self.progress.add_task(title, total=len(labs))

    def __enter__(self) -> FleetProgress:
        self.progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.progress.stop()

    def step(self, lab: str, line: str) -> None:
        self.started.setdefault(lab, time.monotonic())
        if self.live:
            self.doing[lab] = line
            self.progress.refresh()

    def done(self, lab: str, error: str | None) -> None:
        seconds = time.monotonic() - self.started.get(lab, self.begun)
        where = self.labs.get(lab, "?")
        self.doing.pop(lab, None)
        self.progress.advance(self.total)
        line = f"{lab} on {where}: " + (f"failed: {error}" if error else f"done in {seconds:.1f} s")
        self.console.print(("✗ " if error else "✓ ") + line)


@click.group()
def fleet() -> None:
    """Many copies of one lab (`NAME-01`, `NAME-02`, …) over one or more Docker engines.

    A fleet is remembered by a label on its labs' containers (`labbuilder.fleet=NAME`), not by a
    file: any machine that reaches the engines can list, check, reset or remove it.

    \b
    A class of 20, on this machine and a second engine:
      labbuilder fleet up labs/kthw.yaml --count 20 --engines local,server2
      labbuilder fleet exercise labs/exercises/kthw-pod-routes.yaml
      labbuilder fleet check --exercise labs/exercises/kthw-pod-routes.yaml --junit grades/
      labbuilder serve
      labbuilder fleet down
    """


@fleet.command("up")
@click.argument("lab_file", required=False)
@click.option("--count", "-n", type=click.IntRange(0, 999), required=True, help="how many labs the fleet has")
@prefix_option
@engines_option
@parallel_option
@user_errors
def fleet_up(lab_file: str | None, count: int, prefix: str | None, engines: str | None, parallel: int) -> None:
    """Bring a fleet of COUNT copies of LAB_FILE up, or converge it to COUNT.

    New labs go to the engine with the most free memory per running lab (the spread is printed,
    with the reason); existing labs stay where they are and converge; labs beyond COUNT are
    removed, the highest-numbered first. The fleet's name defaults to the lab's name. Without
    LAB_FILE, a fleet that exists grows or shrinks from the lab file its labs keep.

    \b
    Examples:
      labbuilder fleet up labs/kthw.yaml --count 10
      labbuilder fleet up labs/kthw.yaml --count 12 --prefix class --engines local,server2
      labbuilder fleet up --count 8 --prefix class --engines local,server2   # shrink, from any machine
    """
    import tempfile

    from labbuilder.lifecycle.fleet import Fleet, kept_file
    from labbuilder.spec.lab_file import resolve_file

    if lab_file is None:
        with tempfile.TemporaryDirectory(prefix="labbuilder-fleet-") as folder:
            group = open_fleet(prefix, engines, parallel)
            _fleet_up(group, kept_file(group, folder), count)
        return
    if prefix is None:
        prefix = resolve_file(lab_file)[1].lab.name
    _fleet_up(Fleet(prefix, _split(engines), parallel), lab_file, count)


def _fleet_up(group: Fleet, lab_file: str, count: int) -> None:
    from labbuilder.lifecycle.fleet import fleet_up, plan_up

    prefix = group.prefix
    plan = plan_up(group, lab_file, count)
    _print_spread(plan)
    labs = {p.lab: p.engine for p in plan.place} | {lab: engine for lab, engine in plan.remove}
    with FleetProgress(f"fleet {prefix}", labs) as display:
        report = fleet_up(group, lab_file, plan, display.step, display.done)
    spread = ", ".join(f"{plan.count(name)} on {name}" for name in group.engines)
    gone = f", {len(report.removed)} removed" if report.removed else ""
    console.print(f"fleet {prefix}: {len(plan.place) - len(report.failed)} labs up ({spread}){gone}")
    for lab, error in sorted(report.failed.items()):
        console.print(f"  {lab}: failed: {error}")
    if report.failed:
        sys.exit(1)


def _print_spread(plan: Any) -> None:
    from rich.table import Table

    table = Table("lab", "engine", "plan", "why", box=None, pad_edge=False)
    for p in plan.place:
        table.add_row(p.lab, p.engine, "new" if p.new else "kept", p.reason)
    for lab, engine in plan.remove:
        table.add_row(lab, engine, "remove", "beyond --count")
    console.print(table)


@fleet.command("ls")
@prefix_option
@engines_option
@user_errors
def fleet_ls(prefix: str | None, engines: str | None) -> None:
    """List the fleets on the engines (or one fleet's labs) and their state.

    \b
    Example:
      labbuilder fleet ls --engines local,server2
    """
    from rich.table import Table

    from labbuilder.lifecycle.fleet import Fleet

    group = Fleet(prefix, _split(engines))
    members = group.members()
    if not members:
        console.print(f"no fleet named {prefix}" if prefix else "no fleets on " + ", ".join(group.engines))
        return
    table = Table("fleet", "lab", "engine", "state", "containers", box=None, pad_edge=False)
    for m in members:
        table.add_row(m.fleet, m.lab, m.engine, m.state, f"{m.running}/{m.total}")
    console.print(table)


@fleet.command("check")
@click.argument("labs", nargs=-1)
@prefix_option
@engines_option
@parallel_option
@click.option("--exercise", "exercise_file", type=click.Path(exists=True, dir_okay=False), help="grade this exercise")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option(
    "--junit",
    "junit",
    metavar="DIR|FILE.xml",
    help="also write JUnit XML: one file per lab into DIR, or the whole fleet into FILE.xml",
)
@user_errors
def fleet_check(
    labs: tuple[str, ...],
    prefix: str | None,
    engines: str | None,
    parallel: int,
    exercise_file: str | None,
    output: str,
    junit: str | None,
) -> None:
    """Run every lab's checks (or an exercise's); exit 1 if any lab fails one.

    \b
    Examples:
      labbuilder fleet check
      labbuilder fleet check --exercise labs/exercises/kthw-pod-routes.yaml --junit reports/
      labbuilder fleet check -o json | jq '.labs[] | select(.passed | not) | .lab'
    """
    from labbuilder.lifecycle import fleet as lifecycle

    group = open_fleet(prefix, engines, parallel)
    reports = lifecycle.fleet_check(group, group.require_members(labs), exercise_file)
    if junit:
        assert group.prefix is not None
        _write_junit(Path(junit), group.prefix, reports)
    passed = sum(r.passed for r in reports)
    if output == "json":
        data = {"fleet": group.prefix, "passed": passed == len(reports), "labs": [r.as_json() for r in reports]}
        click.echo(json.dumps(data, indent=2))
    else:
        _print_checks(reports)
        console.print(f"fleet {group.prefix}: {passed} of {len(reports)} labs pass every check")
    if passed != len(reports):
        sys.exit(1)


def _write_junit(path: Path, prefix: str, reports: list[Any]) -> None:
    from labbuilder.lifecycle.fleet import junit_files, junit_one

    if path.suffix == ".xml":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(junit_one(prefix, reports))
        return
    path.mkdir(parents=True, exist_ok=True)
    for name, text in junit_files(reports).items():
        (path / name).write_text(text)


def _print_checks(reports: list[Any]) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table("lab", "engine", "checks", "failing", box=None, pad_edge=False)
    for r in reports:
        ok = sum(x.passed for x in r.results)
        failing = r.error or "; ".join(f"{x.name}: {x.detail}" for x in r.results if not x.passed)
        mark = Text(f"{ok}/{len(r.results)} pass", style="green" if r.passed else "red")
        table.add_row(r.lab, r.engine, mark, failing)
    console.print(table)


@fleet.command("reset")
@click.argument("labs", nargs=-1)
@prefix_option
@engines_option
@parallel_option
@user_errors
def fleet_reset(labs: tuple[str, ...], prefix: str | None, engines: str | None, parallel: int) -> None:
    """Put the fleet's labs (or only LABS) back to pristine, and say what was repaired in each.

    \b
    Examples:
      labbuilder fleet reset
      labbuilder fleet reset kthw-03 kthw-07
    """
    from labbuilder.lifecycle import fleet as lifecycle

    group = open_fleet(prefix, engines, parallel)
    members = group.require_members(labs)
    results = lifecycle.fleet_reset(group, members)
    _each_line(members, results, lambda r: f"{len(r.repairs) or 'nothing'} repaired", lambda r: r.repairs)


def _each_line(
    members: list[Member],
    results: dict[str, tuple[Any, str | None]],
    say: Callable[[Any], str],
    details: Callable[[Any], list[str]] = lambda _: [],
) -> None:
    """One line per lab, details indented under it; exit 1 when any lab failed."""
    failed = 0
    for m in members:
        value, error = results[m.lab]
        if error:
            failed += 1
            console.print(f"{m.lab} on {m.engine}: failed: {error}")
            continue
        console.print(f"{m.lab} on {m.engine}: {say(value)}")
        for line in details(value):
            console.print(f"  {line}")
    if failed:
        console.print(f"{failed} of {len(members)} labs failed")
        sys.exit(1)


@fleet.command("down")
@prefix_option
@engines_option
@parallel_option
@user_errors
def fleet_down(prefix: str | None, engines: str | None, parallel: int) -> None:
    """Remove every lab of the fleet, on every engine given.

    \b
    Example:
      labbuilder fleet down --prefix class --engines local,server2
    """
    from labbuilder.lifecycle import fleet as lifecycle

    group = open_fleet(prefix, engines, parallel)
    members = group.members()
    if not members:
        console.print(f"no labs in fleet {group.prefix} on {', '.join(group.engines)}: nothing to do")
        return
    results = lifecycle.fleet_down(group, members)
    _each_line(members, results, lambda names: f"removed {len(names)} containers")
    console.print(f"fleet {group.prefix}: {len(members)} labs removed")


@fleet.command("exercise")
@click.argument("exercise_file", type=click.Path(exists=True, dir_okay=False))
@click.argument("labs", nargs=-1)
@prefix_option
@engines_option
@parallel_option
@user_errors
def fleet_exercise(
    exercise_file: str, labs: tuple[str, ...], prefix: str | None, engines: str | None, parallel: int
) -> None:
    """Start the same exercise on every lab of the fleet (or on LABS): its setup runs in each.

    \b
    Example:
      labbuilder fleet exercise labs/exercises/kthw-pod-routes.yaml
      labbuilder fleet check --exercise labs/exercises/kthw-pod-routes.yaml
    """
    from labbuilder.lifecycle import fleet as lifecycle

    group = open_fleet(prefix, engines, parallel)
    members = group.require_members(labs)
    results = lifecycle.fleet_exercise(group, members, exercise_file)
    titles = {title for title, _ in results.values() if title}
    if titles:
        console.print(bold(", ".join(sorted(titles))))
    _each_line(members, results, lambda _: "started")
    console.print(f"When they are done: labbuilder fleet check --prefix {group.prefix} --exercise {exercise_file}")


COMMANDS: list[click.Command] = [fleet]
