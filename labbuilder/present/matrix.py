"""Truth tables for people: one as the e2e suite prints it, or measured and expected side by side
with the cells that differ marked."""

from __future__ import annotations

from labbuilder.spec.truthtable import TruthTable

GAP = "    "
DIFFERS = "*"  # after a mark: this cell differs from the other table


def _grid(table: TruthTable, wrong: set[tuple[str, str]]) -> list[str]:
    """The table with tabs expanded to columns (so two can stand side by side), differing cells starred."""
    width = max(len(name) for name in ("-", *table.froms, *table.tos)) + 2
    rows = [["-", *table.tos]]
    for f, marks in zip(table.froms, table.marks, strict=True):
        rows.append([f, *(m + (DIFFERS if (f, t) in wrong else "") for t, m in zip(table.tos, marks, strict=True))])
    return ["".join(cell.ljust(width) for cell in row).rstrip() for row in rows]


def side_by_side(measured: TruthTable, expected: TruthTable, titles: tuple[str, str]) -> str:
    wrong = {(f, t) for f, t, _, _ in measured.differences(expected)}
    left, right = _grid(measured, wrong), _grid(expected, wrong)
    width = max(len(line) for line in [*left, titles[0]])
    lines = [titles[0].ljust(width) + GAP + titles[1]]
    lines += [a.ljust(width) + GAP + b for a, b in zip(left, right, strict=True)]
    return "\n".join(line.rstrip() for line in lines)


def differences_text(measured: TruthTable, expected: TruthTable) -> str:
    wrong = measured.differences(expected)
    if not wrong:
        return f"measured = expected: all {len(measured.froms) * len(measured.tos)} cells agree"
    lines = [f"{len(wrong)} cell(s) differ ({DIFFERS}):"]
    lines += [f"  {f} → {t}: measured {got}, expected {want}" for f, t, got, want in wrong]
    return "\n".join(lines)
