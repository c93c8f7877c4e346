"""Reachability truth tables, as the Kubernetes network-policy e2e suite keeps and prints them.

Rows are sources, columns destinations, pods named `namespace/name` (`x/a`); a cell is `.`
(reached), `X` (blocked) or `?` (not known) — test/e2e/network/netpol/truthtable.go's
PrettyPrint: a header `-` then the columns, tab-separated, one line per source. Grouped by
namespace, a cell is `.` when every pod pair of the two namespaces is reached, `X` when none is,
and `~` when some are. The same text is what a lab's matrix check may hold as its expectation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from labbuilder.spec.model import Lab, Pod, Protocol

REACHED, BLOCKED, UNKNOWN, SOME = ".", "X", "?", "~"
MARKS = (REACHED, BLOCKED, UNKNOWN, SOME)
Group = Literal["pods", "namespaces"]


@dataclass(frozen=True)
class TruthTable:
    froms: tuple[str, ...]
    tos: tuple[str, ...]
    marks: tuple[tuple[str, ...], ...]  # marks[i][j]: froms[i] → tos[j]

    @classmethod
    def build(cls, froms: Sequence[str], tos: Sequence[str], value: Callable[[str, str], bool | None]) -> TruthTable:
        return cls(tuple(froms), tuple(tos), tuple(tuple(_mark(value(f, t)) for t in tos) for f in froms))

    def mark(self, source: str, target: str) -> str:
        return self.marks[self.froms.index(source)][self.tos.index(target)]

    def pretty(self, indent: str = "") -> str:
        """PrettyPrint of the e2e suite, to the character."""
        lines = [indent + "\t".join(("-", *self.tos))]
        lines += [indent + "\t".join((f, *row)) for f, row in zip(self.froms, self.marks, strict=True)]
        return "\n".join(lines)

    def differences(self, other: TruthTable) -> list[tuple[str, str, str, str]]:
        """(from, to, this mark, other mark) of each cell where the two tables differ."""
        if (self.froms, self.tos) != (other.froms, other.tos):
            raise ValueError("the tables have different rows or columns")
        return [
            (f, t, mine, theirs)
            for f, row, other_row in zip(self.froms, self.marks, other.marks, strict=True)
            for t, mine, theirs in zip(self.tos, row, other_row, strict=True)
            if mine != theirs
        ]

    def compare(self, other: TruthTable) -> TruthTable:
        """The e2e suite's comparison table: `.` where the two agree, `X` where they differ."""
        wrong = {(f, t) for f, t, _, _ in self.differences(other)}
        return TruthTable.build(self.froms, self.tos, lambda f, t: (f, t) not in wrong)

    def grouped(self, group_of: Mapping[str, str]) -> TruthTable:
        """Rows and columns merged by group (a namespace): `.` all reached, `X` none, `~` some."""
        froms = tuple(dict.fromkeys(group_of[f] for f in self.froms))
        tos = tuple(dict.fromkeys(group_of[t] for t in self.tos))

        def merged(source: str, target: str) -> str:
            cells = {
                mark
                for f, row in zip(self.froms, self.marks, strict=True)
                if group_of[f] == source
                for t, mark in zip(self.tos, row, strict=True)
                if group_of[t] == target
            }
            return cells.pop() if len(cells) == 1 else UNKNOWN if UNKNOWN in cells else SOME

        return TruthTable(froms, tos, tuple(tuple(merged(f, t) for t in tos) for f in froms))


def _mark(value: bool | None) -> str:
    return UNKNOWN if value is None else REACHED if value else BLOCKED


def parse(text: str) -> TruthTable:
    """A table as `pretty` prints it (tabs or runs of spaces between cells). ValueError says which line."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines or lines[0][:1] != ["-"]:
        raise ValueError("line 1: a truth table starts with `-` and the column names")
    tos = tuple(lines[0][1:])
    froms, marks = [], []
    for n, cells in enumerate(lines[1:], start=2):
        if len(cells) != len(tos) + 1:
            raise ValueError(f"line {n}: {len(cells) - 1} cells for {len(tos)} columns")
        bad = [c for c in cells[1:] if c not in MARKS]
        if bad:
            raise ValueError(f"line {n}: {bad[0]!r} is not a mark (. reached, X blocked)")
        froms.append(cells[0])
        marks.append(tuple(cells[1:]))
    return TruthTable(tuple(froms), tos, tuple(marks))


# -- which pods a matrix shows ----------------------------------------------------------------------


def matrix_pods(lab: Lab, port: int, protocol: Protocol) -> dict[str, Pod]:
    """The pods that serve `port/protocol`, by their name in the table: `namespace/workload` when the
    workload has one pod (`x/a`, as the e2e model names them), `namespace/pod` otherwise."""
    serving = [p for p in lab.pods if any(pp.port == port and pp.protocol == protocol for pp in p.ports)]
    replicas: dict[tuple[str, str | None], int] = {}
    for p in lab.pods:
        replicas[(p.namespace, p.workload)] = replicas.get((p.namespace, p.workload), 0) + 1
    named = {}
    for p in serving:
        single = p.workload is not None and replicas[(p.namespace, p.workload)] == 1
        named[f"{p.namespace}/{p.workload if single else p.name}"] = p
    return dict(sorted(named.items()))


def namespace_of(names: Sequence[str]) -> dict[str, str]:
    return {name: name.split("/", 1)[0] for name in names}
