"""iptables tables as plain data: build them, render an iptables-restore payload, parse iptables-save.

A rule is kept as the text after ``-A CHAIN `` exactly as ``iptables-save`` prints it, so a table
read back from a node compares equal to the planned one without any normalising of options.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from labbuilder.resources import template

BUILTIN_CHAINS: dict[str, tuple[str, ...]] = {
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
}

# Characters xtables_save_string() leaves unquoted; anything else makes iptables-save quote the value.
_NO_QUOTE = re.compile(r"[A-Za-z0-9_-]+")
_COUNTERS = re.compile(r"^\[\d+:\d+\]\s*")


@dataclass
class Table:
    name: str  # "nat" or "filter"
    # chain -> rules; a rule is the text after "-A CHAIN " exactly as iptables-save prints it
    chains: dict[str, list[str]] = field(default_factory=dict)

    def chain(self, name: str) -> None:
        """Declare a chain (idempotent; the first declaration fixes its place)."""
        self.chains.setdefault(name, [])

    def add(self, chain: str, rule: str) -> None:
        self.chain(chain)
        self.chains[chain].append(rule)


def quote(value: str) -> str:
    """Quote an option value the way iptables-save does (libxtables xtables_save_string)."""
    if _NO_QUOTE.fullmatch(value):
        return value
    return '"' + re.sub(r'(["\\\'])', r"\\\1", value) + '"'


def comment(text: str) -> str:
    return f"-m comment --comment {quote(text)}"


def _builtins(table: str) -> tuple[str, ...]:
    try:
        return BUILTIN_CHAINS[table]
    except KeyError:
        raise ValueError(f"unsupported iptables table {table!r}") from None


def merge(tables: Iterable[Table]) -> dict[str, Table]:
    """Combine tables by name; chains keep first-declared order and rules are concatenated."""
    merged: dict[str, Table] = {}
    for table in tables:
        out = merged.setdefault(table.name, Table(table.name))
        for chain, rules in table.chains.items():
            out.chain(chain)
            out.chains[chain].extend(rules)
    return merged


def render_restore(tables: Iterable[Table]) -> str:
    """A complete iptables-restore payload (flushes and replaces each table it names)."""
    context = []
    for table in merge(tables).values():
        builtins = _builtins(table.name)
        user = [chain for chain in table.chains if chain not in builtins]
        order = [*builtins, *user]
        rules = [f"-A {chain} {rule}".rstrip() for chain in order for rule in table.chains.get(chain, [])]
        context.append({"name": table.name, "builtins": builtins, "user": user, "rules": rules})
    return template("iptables-restore.j2").render(tables=context)


def parse_save(text: str) -> dict[str, Table]:
    """Parse iptables-save output (with or without -c); builtin chains are always present."""
    tables: dict[str, Table] = {}
    current: Table | None = None
    for raw in text.splitlines():
        line = _COUNTERS.sub("", raw.strip())
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            current = tables.setdefault(line[1:], Table(line[1:]))
            for chain in BUILTIN_CHAINS.get(current.name, ()):
                current.chain(chain)
        elif current is None:
            raise ValueError(f"iptables-save line outside a table: {raw!r}")
        elif line == "COMMIT":
            current = None
        elif line.startswith(":"):
            current.chain(line[1:].split()[0])
        elif line.startswith("-A "):
            _, chain, *rest = line.split(" ", 2)
            current.add(chain, rest[0] if rest else "")
        else:
            raise ValueError(f"unexpected iptables-save line: {raw!r}")
    return tables


def normalise(tables: dict[str, Table]) -> dict[str, dict[str, list[str]]]:
    """Plain dicts for comparison: chain order is irrelevant (iptables-nft-save sorts user chains
    by name), rule order within a chain is kept, builtin chains are present even when empty."""
    out: dict[str, dict[str, list[str]]] = {}
    for name, table in tables.items():
        chains: dict[str, list[str]] = {chain: [] for chain in BUILTIN_CHAINS.get(name, ())}
        for chain, rules in table.chains.items():
            chains.setdefault(chain, []).extend(rules)
        out[name] = chains
    return out
