"""How far `up` is, as counts a front end can draw: containers created, nodes configured, iptables
rules in place, pods serving. The lifecycle reports them; the CLI draws a bar on a terminal.

A caller that takes counts gets no per-item lines ("worker-7: configured"): a thousand-pod lab
would print them by the dozen under a bar that already says it. A caller without counts (a pipe,
CI, the bench) gets today's plain lines.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from labbuilder.compile.ops import Iptables
from labbuilder.compile.plan import Plan

What = Literal["containers", "nodes", "rules", "pods"]
WHAT: tuple[What, ...] = ("containers", "nodes", "rules", "pods")  # the order a front end shows them


@dataclass(frozen=True)
class Count:
    """`done` of `total` items of one kind of work; sent whenever `done` grows."""

    what: What
    done: int
    total: int


Counts = Callable[[Count], None]


class Tally:
    """One kind of work's count, safe to add to from the worker threads that do the work."""

    def __init__(self, what: What, total: int, report: Counts | None):
        self.what, self.total, self.done = what, total, 0
        self._report = report
        self._lock = threading.Lock()
        if report is not None:
            report(Count(what, 0, total))  # announced before any work: a bar knows its size at once

    def add(self, amount: int = 1) -> None:
        if self._report is None or amount == 0:
            return
        with self._lock:  # one report at a time, so counts arrive in order
            self.done += amount
            self._report(Count(self.what, self.done, self.total))


def rules(plan: Plan, key: str) -> int:
    """The iptables rules container `key`'s operations put in place (`-A` lines of its payloads)."""
    return sum(op.payload.count("\n-A ") for op in plan.steps[key] if isinstance(op, Iptables))


def pods(plan: Plan, key: str) -> int:
    try:
        return len(plan.lab.node(key).pods)
    except KeyError:
        return 0  # the router runs no pods
