"""iptables tables as plain data: build them, render an iptables-restore payload, parse iptables-save.

A rule is kept as the text after ``-A CHAIN `` exactly as ``iptables-save`` prints it, so a table
read back from a node compares equal to the planned one without any normalising of options.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

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


class Restore:
    """An iptables-restore payload built from tables shared by many nodes plus each node's own.

    A 1000-endpoint service makes thousands of kube-proxy rules, the same on every node: their
    lines are formatted once here, into one text per table, and each node's payload is that text
    with its own chains declared and its own rules spliced in at the end of their chains.
    `Restore(shared).render(own)` equals `render_restore([*shared, *own])` (and the plain,
    chain-by-chain `render_simple` the unit tests compare it with).
    """

    def __init__(self, shared: Iterable[Table]):
        self.shared = merge(shared)
        self._parts = {name: _Formatted(table) for name, table in self.shared.items()}

    def render(self, own: Iterable[Table] = ()) -> str:
        """Whole tables, each block replacing its table (no --noflush)."""
        mine = merge(own)
        out = []
        for name in [*self.shared, *(n for n in mine if n not in self.shared)]:
            formatted = self._parts.get(name) or _Formatted(Table(name))
            out.append(formatted.render(mine.get(name, Table(name))))
        return "".join(out)


class _Formatted:
    """One shared table as text: its header (the chain declarations), each builtin chain's rules,
    and the user chains' rules as one text with where each chain ends. A node's own rules usually
    go to builtin chains (POSTROUTING) and chains of its own: the user chains' text is then taken
    whole, and only a rule for a shared user chain makes it cut there."""

    def __init__(self, table: Table):
        self.builtins = _builtins(table.name)
        self.user = [c for c in table.chains if c not in self.builtins]
        self.head = (
            f"*{table.name}\n"
            + "".join(f":{chain} ACCEPT [0:0]\n" for chain in self.builtins)
            + "".join(f":{chain} - [0:0]\n" for chain in self.user)
        )
        self.builtin_rules = {chain: _rules(chain, table.chains.get(chain, [])) for chain in self.builtins}
        self.ends: dict[str, tuple[int, int]] = {}  # chain -> (its place, where its rules end)
        bodies, offset = [], 0
        for place, chain in enumerate(self.user):
            bodies.append(_rules(chain, table.chains[chain]))
            offset += len(bodies[-1])
            self.ends[chain] = (place, offset)  # chains without rules end where the one before does
        self.user_rules = "".join(bodies)

    def render(self, extra: Table) -> str:
        own = extra.chains
        new = [c for c in own if c not in self.builtin_rules and c not in self.ends]
        out = [self.head, *(f":{chain} - [0:0]\n" for chain in new)]
        for chain, rules in self.builtin_rules.items():
            out.append(rules)
            if own.get(chain):
                out.append(_rules(chain, own[chain]))
        start = 0
        for (_, end), chain in sorted((self.ends[c], c) for c in own if c in self.ends and own[c]):
            out += [self.user_rules[start:end], _rules(chain, own[chain])]
            start = end
        out.append(self.user_rules[start:] if start else self.user_rules)
        out += [_rules(chain, own[chain]) for chain in new]
        out.append("COMMIT\n")
        return "".join(out)


def render_simple(tables: Iterable[Table]) -> str:
    """The payload chain by chain, without any precomputing: what `Restore` must equal."""
    out = []
    for name, table in merge(tables).items():
        builtins = _builtins(name)
        user = [c for c in table.chains if c not in builtins]
        out.append(f"*{name}\n")
        out += [f":{chain} ACCEPT [0:0]\n" for chain in builtins]
        out += [f":{chain} - [0:0]\n" for chain in user]
        out += [_rules(chain, table.chains.get(chain, [])) for chain in [*builtins, *user]]
        out.append("COMMIT\n")
    return "".join(out)


def _rules(chain: str, rules: list[str]) -> str:
    return "".join(f"-A {chain} {rule}".rstrip() + "\n" for rule in rules)


def render_restore(tables: Iterable[Table]) -> str:
    """A complete iptables-restore payload (flushes and replaces each table it names)."""
    return Restore(tables).render()


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
