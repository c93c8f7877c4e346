"""The fleet's board, as data and as a page: one row per lab — engine, state, each check's
pass/fail, when that last changed. Pure: `labbuilder serve` (cli/serve.py) gathers the rows and
serves what this renders (templates/board.html.j2, no external assets)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from labbuilder.resources import template


@dataclass(frozen=True)
class Cell:
    """One check's last result on one lab."""

    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Row:
    lab: str
    engine: str
    state: str  # running, stopped, degraded (…), gone
    checks: tuple[Cell, ...] = ()
    error: str | None = None  # the lab could not be checked
    checked: float | None = None  # epoch seconds of the last check
    changed: float | None = None  # epoch seconds the pass/fail picture (or the state) last changed
    busy: str | None = None  # "checking", "resetting"
    queued: str | None = None  # what runs when the current work ends (a click is never lost)
    reset: float | None = None  # epoch seconds the last reset ended
    reset_error: str | None = None  # why that reset failed, shown until the next one

    @property
    def passed(self) -> bool | None:
        """True/False once checked; None before the first check."""
        if self.error:
            return False
        return None if self.checked is None else all(c.passed for c in self.checks)


@dataclass(frozen=True)
class Board:
    fleet: str
    rows: tuple[Row, ...]
    refresh: int = 5  # seconds between the page's reloads


def columns(board: Board) -> list[str]:
    """Every check's name, in the order the labs hold them (labs of one fleet share a file)."""
    return list(dict.fromkeys(c.name for row in board.rows for c in row.checks))


def ago(then: float | None, now: float) -> str:
    """`12 s ago`, `3 min ago`, `2 h ago` — or `never`."""
    if then is None:
        return "never"
    seconds = max(0, int(now - then))
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"


def render_html(board: Board, can_act: bool, now: float | None = None) -> str:
    """The page. `can_act`: the viewer holds the token, so the reset and check buttons work."""
    now = time.time() if now is None else now
    names = columns(board)
    rows = []
    for row in board.rows:
        by_name = {c.name: c for c in row.checks}
        rows.append({"row": row, "cells": [by_name.get(name) for name in names]})
    passing = sum(row.passed is True for row in board.rows)
    return template("board.html.j2").render(
        board=board,
        names=names,
        rows=rows,
        passing=passing,
        can_act=can_act,
        ago=lambda then: ago(then, now),
        stamp=time.strftime("%H:%M:%S", time.localtime(now)),
    )


def as_json(board: Board) -> dict[str, Any]:
    """What `/api/labs` answers: the same rows as the page."""
    return {
        "fleet": board.fleet,
        "labs": [
            {
                "lab": row.lab,
                "engine": row.engine,
                "state": row.state,
                "passed": row.passed,
                "error": row.error,
                "checked": row.checked,
                "changed": row.changed,
                "busy": row.busy,
                "queued": row.queued,
                "reset": row.reset,
                "reset_error": row.reset_error,
                "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in row.checks],
            }
            for row in board.rows
        ],
    }
