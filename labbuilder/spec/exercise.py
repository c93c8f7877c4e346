"""Exercise files: a task for learners, the commands that set it up (break the lab), and the checks that grade it.

title: Restore the pod route
lab: kthw                     # the lab file it is written for (informative)
task: |
  Pods on worker-0 cannot reach worker-1's pods. Find out why and fix it.
setup:                        # run by `labbuilder exercise start LAB FILE`
  - {on: router, run: ip route del 10.200.1.0/24}
checks: [...]                 # as in a lab file; graded by `labbuilder check LAB --exercise FILE`
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labbuilder.errors import LabError, SpecError
from labbuilder.spec import refs
from labbuilder.spec.checks import check_from_spec, validate_check
from labbuilder.spec.load import lab_schema, load_bytes
from labbuilder.spec.model import Check, Lab


@dataclass(frozen=True)
class Step:
    on: str  # ROUTER or node/NAME or pod/NAME
    run: str


@dataclass(frozen=True)
class Exercise:
    title: str
    task: str
    setup: tuple[Step, ...]
    checks: tuple[Check, ...]


def exercise_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["title", "checks"],
        "additionalProperties": False,
        "properties": {
            "$schema": {"type": "string"},
            "title": {"type": "string"},
            "lab": {"type": "string"},
            "task": {"type": "string"},
            "setup": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["on", "run"],
                    "additionalProperties": False,
                    "properties": {
                        "on": {"type": "string", "description": "router, node/NAME or pod/NAME"},
                        "run": {"type": "string", "description": "a shell command run there"},
                    },
                },
            },
            "checks": {"$ref": "#/$defs/checks"},
        },
        "$defs": lab_schema()["$defs"],
    }


def load_exercise(path: str, lab: Lab) -> Exercise:
    """Load and check an exercise against the running lab; names must exist in it."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise LabError(f"{path}: cannot read: {err.strerror}") from None
    spec = load_bytes(data, path, exercise_schema())  # the lab file's limits and located errors
    problems = []
    checks = []
    for i, item in enumerate(spec.data["checks"]):
        check = check_from_spec(item, i)
        try:
            validate_check(lab, check)
            checks.append(check)
        except LabError as err:
            problems.append(spec.problem(("checks", i), f"check {check.name!r}: {err.message}", err.hint))
    steps = []
    for i, item in enumerate(spec.data.get("setup", [])):
        try:
            refs.place(lab, item["on"])
        except LabError as err:
            problems.append(spec.problem(("setup", i, "on"), err.message, err.hint))
        steps.append(Step(item["on"], item["run"]))
    if problems:
        raise SpecError(problems)
    return Exercise(spec.data["title"], spec.data.get("task", ""), tuple(steps), tuple(checks))
