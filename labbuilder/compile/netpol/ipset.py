"""ipsets as data, both ways: the `ipset restore` payload kube-router feeds the kernel, and
`ipset save` read back into sets of members, so a node's sets compare with the planned ones."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Network

from labbuilder.compile.netpol import names

HASH_IP, HASH_NET = "hash:ip", "hash:net"


@dataclass(frozen=True)
class IpSet:
    """One ipset as kube-router's RefreshSet makes it: `<type> timeout 0`, entries with their options."""

    name: str
    kind: str  # hash:ip or hash:net
    entries: tuple[str, ...]  # "10.200.0.2 timeout 0", "10.0.0.0/8 timeout 0 nomatch"

    @property
    def options(self) -> str:
        return f"{self.kind} timeout 0"

    @property
    def members(self) -> frozenset[str]:
        return frozenset(member(entry) for entry in self.entries)


def member(entry: str) -> str:
    """An entry as one comparable word: the address or network (`ipset save` drops a hash:net
    member's /32), `!` in front of a `nomatch` one."""
    words = entry.split()
    net = IPv4Network(words[0])
    text = str(net.network_address) if net.prefixlen == 32 else str(net)
    return f"!{text}" if "nomatch" in words else text


def restore(sets: Iterable[IpSet]) -> str:
    """utils.buildIPSetRestore: each set filled in a scratch set and swapped in, sets by name, so
    one `ipset restore -exist` makes every set hold exactly its entries, again and again."""
    out: list[str] = []
    tmps: dict[str, str] = {}
    for s in sorted(sets, key=lambda s: s.name):
        tmp = tmps.get(s.options)
        if tmp is None:
            tmp = tmps[s.options] = names.tmp_set(s.options)
            out += [f"create {tmp} {s.options}", f"flush {tmp}"]
        out += [f"add {tmp} {entry}" for entry in s.entries]
        out += [f"create {s.name} {s.options}", f"swap {tmp} {s.name}", f"flush {tmp}"]
    out += [f"destroy {tmp}" for tmp in sorted(tmps.values())]
    return "".join(line + "\n" for line in out)


def parse_save(text: str) -> dict[str, tuple[str, frozenset[str]]]:
    """`ipset save` → {set: (type, members)}; kube-router's scratch sets are left out."""
    sets: dict[str, tuple[str, set[str]]] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] == "create" and not words[1].startswith(names.TMP):
            sets[words[1]] = (words[2], set())
        elif len(words) >= 3 and words[0] == "add" and words[1] in sets:
            sets[words[1]][1].add(member(" ".join(words[2:])))
    return {name: (kind, frozenset(members)) for name, (kind, members) in sets.items()}
