"""The vocabulary of a plan: operations, each a frozen fact about one namespace, with its phase.

An operation says what must be true (a link, an address, a route, a file, a process), not how
to make it so; `engine.apply` makes it true idempotently. Every operation describes itself as the
shell command a person would type inside the container (what `labbuilder plan` prints), and
carries the phase it belongs to: apply, render and reset all walk a container's operations in
`PHASES` order, plan order within a phase.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

from labbuilder.compile.ns import Ns
from labbuilder.spec.keys import ROUTER

__all__ = ["PHASES", "ROUTER", "Ns", "Op", "Phase", "by_phase"]


class Phase(IntEnum):
    """Why this order: links need their namespace, routes need their addresses (a gateway must
    be on-link), iptables-restore and processes need their files, and the rules need the ipsets
    they match on (iptables refuses `-m set` with a set that does not exist)."""

    NETNS = 0  # pod namespaces (one exec per container)
    LINKS = 1  # links, masters, addresses, neighbours, fdb (netlink)
    ROUTES = 2  # routes (netlink), after the addresses that make their gateways reachable
    FILES = 3  # files (one archive)
    IPSETS = 4  # ipset restore (kube-router's sets), before the rules that match on them
    RULES = 5  # iptables-restore of whole tables, then nft -f of kube-proxy's table (nftables mode)
    PROCESSES = 6  # long-running processes, started once (pidfiles)


PHASES = tuple(Phase)


class Command:
    """An operation that is one `ip` (or `bridge`) command in its namespace: `args()` is what
    follows the tool; `apply` batches the args of one namespace into one `ip -batch`."""

    tool: ClassVar[str] = "ip"

    def args(self) -> str:
        raise NotImplementedError

    def describe(self) -> str:
        netns = self.ns.netns  # type: ignore[attr-defined]
        return f"{self.tool} -n {netns} {self.args()}" if netns else f"{self.tool} {self.args()}"


@dataclass(frozen=True)
class AddNetns:
    ns: Ns  # the pod namespace to create (ns.netns is its name)

    phase: ClassVar[Phase] = Phase.NETNS

    def describe(self) -> str:
        return f"ip netns add {self.ns.netns}"


@dataclass(frozen=True)
class Veth(Command):
    """A veth pair created inside `ns` with its peer placed straight into `peer_ns`."""

    ns: Ns
    name: str
    peer_ns: Ns
    peer_name: str
    mac: str | None = None
    peer_mac: str | None = None
    mtu: int = 1500

    phase: ClassVar[Phase] = Phase.LINKS

    def args(self, peer_netns: str | None = None) -> str:
        """`peer_netns` names the peer's namespace where the plan cannot: another container's, by
        its pid on the host (known only when the lab runs)."""
        where = f" netns {peer_netns or self.peer_ns.netns or f'<pid of {self.peer_ns.container}>'}"
        mac = f" address {self.mac}" if self.mac else ""
        peer_mac = f" address {self.peer_mac}" if self.peer_mac else ""
        return (
            f"link add {self.name}{mac} mtu {self.mtu} type veth "
            f"peer name {self.peer_name}{peer_mac} mtu {self.mtu}{where}"
        )


@dataclass(frozen=True)
class Bridge(Command):
    ns: Ns
    name: str
    mac: str | None = None
    mtu: int = 1500

    phase: ClassVar[Phase] = Phase.LINKS

    def args(self) -> str:
        mac = f" address {self.mac}" if self.mac else ""
        return f"link add {self.name}{mac} mtu {self.mtu} type bridge"


@dataclass(frozen=True)
class Vxlan(Command):
    ns: Ns
    name: str
    vni: int
    local: str
    port: int
    dev: str
    mtu: int
    mac: str | None = None

    phase: ClassVar[Phase] = Phase.LINKS

    def args(self) -> str:
        mac = f" address {self.mac}" if self.mac else ""
        return (
            f"link add {self.name}{mac} mtu {self.mtu} type vxlan id {self.vni} "
            f"local {self.local} dev {self.dev} dstport {self.port} nolearning"
        )


@dataclass(frozen=True)
class Master(Command):
    ns: Ns
    ifname: str
    master: str

    phase: ClassVar[Phase] = Phase.LINKS

    def args(self) -> str:
        return f"link set {self.ifname} master {self.master}"


@dataclass(frozen=True)
class Hairpin(Command):
    """Let a bridge port send frames back out where they came in: a pod reaching itself via a service."""

    ns: Ns
    ifname: str

    phase: ClassVar[Phase] = Phase.LINKS

    def args(self) -> str:
        return f"link set {self.ifname} type bridge_slave hairpin on"


@dataclass(frozen=True)
class LinkUp(Command):
    ns: Ns
    ifname: str

    phase: ClassVar[Phase] = Phase.LINKS

    def args(self) -> str:
        return f"link set {self.ifname} up"


@dataclass(frozen=True)
class Address(Command):
    ns: Ns
    ifname: str
    cidr: str  # "10.200.0.1/24"

    phase: ClassVar[Phase] = Phase.LINKS

    def args(self) -> str:
        return f"addr add {self.cidr} dev {self.ifname}"


@dataclass(frozen=True)
class Route(Command):
    ns: Ns
    dst: str  # "default" or a CIDR
    via: str | None = None
    dev: str | None = None
    scope: str | None = None  # "host", "link"
    src: str | None = None
    onlink: bool = False
    proto: str | None = None  # "kernel" only when reset restores an address's connected route

    phase: ClassVar[Phase] = Phase.ROUTES

    def args(self) -> str:
        text = f"route replace {self.dst}"
        text += f" via {self.via}" if self.via else ""
        text += f" dev {self.dev}" if self.dev else ""
        text += f" proto {self.proto}" if self.proto else ""
        text += f" scope {self.scope}" if self.scope else ""
        text += f" src {self.src}" if self.src else ""
        return text + (" onlink" if self.onlink else "")


@dataclass(frozen=True)
class Neighbour(Command):
    ns: Ns
    ip: str
    mac: str
    dev: str

    phase: ClassVar[Phase] = Phase.LINKS

    def args(self) -> str:
        return f"neigh replace {self.ip} lladdr {self.mac} dev {self.dev} nud permanent"


@dataclass(frozen=True)
class Fdb(Command):
    ns: Ns
    mac: str
    dev: str
    dst: str

    phase: ClassVar[Phase] = Phase.LINKS

    tool: ClassVar[str] = "bridge"

    def args(self) -> str:
        return f"fdb append {self.mac} dev {self.dev} dst {self.dst} self permanent"


@dataclass(frozen=True)
class WriteFile:
    ns: Ns
    path: str
    content: str

    phase: ClassVar[Phase] = Phase.FILES

    def describe(self) -> str:
        return f"cat > {self.path} <<'EOF'\n{self.content.rstrip()}\nEOF"


@dataclass(frozen=True)
class Iptables:
    """A whole-table iptables-restore payload (nat and filter), applied atomically."""

    ns: Ns
    payload: str

    phase: ClassVar[Phase] = Phase.RULES

    def describe(self) -> str:
        return f"iptables-restore <<'EOF'\n{self.payload.rstrip()}\nEOF"


@dataclass(frozen=True)
class Ipsets:
    """kube-router's ipsets: an `ipset restore -exist` payload that fills a scratch set and swaps
    it in for each set, so applying it again leaves every set holding exactly its entries."""

    ns: Ns
    payload: str

    phase: ClassVar[Phase] = Phase.IPSETS

    def describe(self) -> str:
        return f"ipset restore -exist <<'EOF'\n{self.payload.rstrip()}\nEOF"


@dataclass(frozen=True)
class Nftables:
    """A whole nftables table (`table ip kube-proxy`), replaced atomically by one `nft -f`."""

    ns: Ns
    family: str  # "ip"
    table: str  # "kube-proxy"
    payload: str  # add table; delete table; the table's transaction — one transaction

    phase: ClassVar[Phase] = Phase.RULES

    def describe(self) -> str:
        return f"nft -f - <<'EOF'\n{self.payload.rstrip()}\nEOF"


@dataclass(frozen=True)
class Process:
    """A long-running process, in a pod netns when ns.netns is set; `name` keys its pidfile."""

    ns: Ns
    name: str
    argv: tuple[str, ...]

    phase: ClassVar[Phase] = Phase.PROCESSES

    def command(self) -> list[str]:
        """What starts it. In a pod netns, `nsenter --net` rather than `ip netns exec`: the process
        needs only the network namespace, and skips the private mount namespace and /sys remount
        `ip netns exec` sets up — a thousand pods start measurably faster."""
        return ["nsenter", f"--net=/run/netns/{self.ns.netns}", *self.argv] if self.ns.netns else list(self.argv)

    def describe(self) -> str:
        return f"{shlex.join(self.command())} &"


Op = (
    AddNetns
    | Veth
    | Bridge
    | Vxlan
    | Master
    | Hairpin
    | LinkUp
    | Address
    | Route
    | Neighbour
    | Fdb
    | WriteFile
    | Ipsets
    | Iptables
    | Nftables
    | Process
)


def by_phase(ops: Iterable[Op]) -> dict[Phase, list[Op]]:
    """A container's operations grouped by phase, in phase order; plan order within each."""
    groups: dict[Phase, list[Op]] = {phase: [] for phase in PHASES}
    for op in ops:
        groups[op.phase].append(op)
    return groups
