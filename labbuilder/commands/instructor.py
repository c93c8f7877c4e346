"""The instructor's commands: grade a lab with checks, start an exercise."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.table import Table

from labbuilder.checks import Exec
from labbuilder.clitools import console, user_errors


def _exec_in(lab_name: str) -> Exec:
    """Run argv in a container of the lab, by node key; (exit code, output)."""
    from labbuilder.runtime.docker import LABEL_NODE, DockerRuntime

    runtime = DockerRuntime()
    containers = {c.labels.get(LABEL_NODE): c for c in runtime.lab_containers(lab_name)}

    def run(key: str, argv: tuple[str, ...]) -> tuple[int, str]:
        result = runtime.exec(containers[key], argv)
        return result.code, result.output

    return run


@click.command()
@click.argument("lab")
@click.option(
    "--exercise",
    "exercise_file",
    type=click.Path(dir_okay=False),
    help="grade the checks of this exercise file instead of the lab's own",
)
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--junit", "junit_file", type=click.Path(dir_okay=False), help="also write a JUnit XML report here")
@user_errors
def check(lab: str, exercise_file: str | None, output: str, junit_file: str | None) -> None:
    """Run the lab's checks (or an exercise's) against running LAB; exit 1 if any fails.

    Checks: reach / no-reach between pods, nodes, services and IP:PORT (icmp, tcp, udp), a
    route present on a node, NAT seen in conntrack, a DNS answer. They run in parallel.

    \b
    Examples:
      labbuilder check kthw
      labbuilder check kthw --exercise labs/exercises/kthw-pod-routes.yaml --junit grades.xml
      labbuilder check kthw -o json
    """
    from labbuilder import checks as grading
    from labbuilder.exercise import load_exercise
    from labbuilder.lab import running_model

    model = running_model(lab)
    to_run = load_exercise(exercise_file, model).checks if exercise_file else model.checks
    if not to_run:
        console.print(f"lab {lab} has no checks" + ("" if exercise_file else " (add `checks:` or use --exercise)"))
        return
    results = grading.run_checks(model, to_run, _exec_in(lab))
    if junit_file:
        Path(junit_file).write_text(grading.junit_xml(lab, results))
    if output == "json":
        click.echo(json.dumps(grading.as_json(results), indent=2))
    else:
        table = Table(box=None, header_style="bold")
        for column in ("RESULT", "CHECK", "WHAT", "DETAIL"):
            table.add_column(column)
        for r in results:
            mark = "[green]PASS[/green]" if r.passed else "[red]FAIL[/red]"
            table.add_row(mark, r.name, r.description, r.detail)
        console.print(table)
        failed = sum(not r.passed for r in results)
        console.print(f"{len(results) - failed} passed, {failed} failed")
    if any(not r.passed for r in results):
        sys.exit(1)


@click.command()
@click.argument("lab")
@click.argument("exercise_file", type=click.Path(exists=True, dir_okay=False))
@user_errors
def exercise(lab: str, exercise_file: str) -> None:
    """Start an exercise on running LAB: print its task and run its setup (what it breaks).

    \b
    Example:
      labbuilder exercise kthw labs/exercises/kthw-pod-routes.yaml
      ...fix it...
      labbuilder check kthw --exercise labs/exercises/kthw-pod-routes.yaml
      labbuilder reset kthw
    """
    from labbuilder.checks import place
    from labbuilder.errors import LabError
    from labbuilder.exercise import load_exercise
    from labbuilder.lab import running_model

    model = running_model(lab)
    ex = load_exercise(exercise_file, model)
    run = _exec_in(lab)
    for step in ex.setup:
        where = place(model, step.on)
        argv: tuple[str, ...] = ("sh", "-c", step.run)
        if where.netns:
            argv = ("ip", "netns", "exec", where.netns, *argv)
        code, out = run(where.key, argv)
        if code != 0:
            raise LabError(f"exercise setup on {step.on}: `{step.run}` failed: {out.strip()}")
    console.print(f"[bold]{ex.title}[/bold]\n")
    console.print(ex.task.strip(), markup=False, highlight=False)
    console.print(f"\nWhen you are done: labbuilder check {lab} --exercise {exercise_file}")


COMMANDS: list[click.Command] = [check, exercise]
