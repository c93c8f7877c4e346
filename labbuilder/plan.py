"""Model → Plan: per-container ordered operations, pure data.

An operation says what must be true (a link, an address, a route, a file, a process), not how
to make it so; drivers in `apply` make it true idempotently. Every operation can describe
itself as the shell command a person would type inside the container, which is what
`labbuilder plan` prints.
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass, field

from labbuilder.addressing import hashed_mac, node_mac
from labbuilder.model import Lab, Node

ROUTER = "router"  # the key of the router's steps in Plan.steps


@dataclass(frozen=True)
class Ns:
    """Where an operation applies: a container's own netns, or a pod netns inside it."""

    container: str  # node name, or ROUTER
    netns: str | None = None

    def ip(self) -> str:
        """The `ip` command prefix for this namespace, as typed inside the container."""
        return f"ip -n {self.netns}" if self.netns else "ip"


@dataclass(frozen=True)
class AddNetns:
    ns: Ns  # the pod namespace to create (ns.netns is its name)

    def describe(self) -> str:
        return f"ip netns add {self.ns.netns}"


@dataclass(frozen=True)
class Veth:
    """A veth pair created inside `ns` with its peer placed straight into `peer_ns`."""

    ns: Ns
    name: str
    peer_ns: Ns
    peer_name: str
    mac: str | None = None
    peer_mac: str | None = None
    mtu: int = 1500

    def describe(self) -> str:
        where = f" netns {self.peer_ns.netns}" if self.peer_ns.netns else f" netns <pid of {self.peer_ns.container}>"
        mac = f" address {self.mac}" if self.mac else ""
        peer_mac = f" address {self.peer_mac}" if self.peer_mac else ""
        return (
            f"{self.ns.ip()} link add {self.name}{mac} mtu {self.mtu} type veth "
            f"peer name {self.peer_name}{peer_mac} mtu {self.mtu}{where}"
        )


@dataclass(frozen=True)
class Bridge:
    ns: Ns
    name: str
    mac: str | None = None
    mtu: int = 1500

    def describe(self) -> str:
        mac = f" address {self.mac}" if self.mac else ""
        return f"{self.ns.ip()} link add {self.name}{mac} mtu {self.mtu} type bridge"


@dataclass(frozen=True)
class Vxlan:
    ns: Ns
    name: str
    vni: int
    local: str
    port: int
    dev: str
    mtu: int
    mac: str | None = None

    def describe(self) -> str:
        mac = f" address {self.mac}" if self.mac else ""
        return (
            f"{self.ns.ip()} link add {self.name}{mac} mtu {self.mtu} type vxlan id {self.vni} "
            f"local {self.local} dev {self.dev} dstport {self.port} nolearning"
        )


@dataclass(frozen=True)
class Master:
    ns: Ns
    ifname: str
    master: str

    def describe(self) -> str:
        return f"{self.ns.ip()} link set {self.ifname} master {self.master}"


@dataclass(frozen=True)
class Hairpin:
    """Let a bridge port send frames back out where they came in: a pod reaching itself via a service."""

    ns: Ns
    ifname: str

    def describe(self) -> str:
        return f"{self.ns.ip()} link set {self.ifname} type bridge_slave hairpin on"


@dataclass(frozen=True)
class LinkUp:
    ns: Ns
    ifname: str

    def describe(self) -> str:
        return f"{self.ns.ip()} link set {self.ifname} up"


@dataclass(frozen=True)
class Address:
    ns: Ns
    ifname: str
    cidr: str  # "10.200.0.1/24"

    def describe(self) -> str:
        return f"{self.ns.ip()} addr add {self.cidr} dev {self.ifname}"


@dataclass(frozen=True)
class Route:
    ns: Ns
    dst: str  # "default" or a CIDR
    via: str | None = None
    dev: str | None = None
    scope: str | None = None  # "host", "link"
    src: str | None = None
    onlink: bool = False
    proto: str | None = None  # "kernel" only when reset restores an address's connected route

    def describe(self) -> str:
        text = f"{self.ns.ip()} route replace {self.dst}"
        text += f" via {self.via}" if self.via else ""
        text += f" dev {self.dev}" if self.dev else ""
        text += f" proto {self.proto}" if self.proto else ""
        text += f" scope {self.scope}" if self.scope else ""
        text += f" src {self.src}" if self.src else ""
        return text + (" onlink" if self.onlink else "")


@dataclass(frozen=True)
class Neighbour:
    ns: Ns
    ip: str
    mac: str
    dev: str

    def describe(self) -> str:
        return f"{self.ns.ip()} neigh replace {self.ip} lladdr {self.mac} dev {self.dev} nud permanent"


@dataclass(frozen=True)
class Fdb:
    ns: Ns
    mac: str
    dev: str
    dst: str

    def describe(self) -> str:
        return f"bridge fdb append {self.mac} dev {self.dev} dst {self.dst} self permanent"


@dataclass(frozen=True)
class WriteFile:
    ns: Ns
    path: str
    content: str

    def describe(self) -> str:
        return f"cat > {self.path} <<'EOF'\n{self.content.rstrip()}\nEOF"


@dataclass(frozen=True)
class Iptables:
    """A whole-table iptables-restore payload (nat and filter), applied atomically."""

    ns: Ns
    payload: str

    def describe(self) -> str:
        return f"iptables-restore <<'EOF'\n{self.payload.rstrip()}\nEOF"


@dataclass(frozen=True)
class Process:
    """A long-running process, in a pod netns when ns.netns is set; `name` keys its pidfile."""

    ns: Ns
    name: str
    argv: tuple[str, ...]

    def describe(self) -> str:
        prefix = f"ip netns exec {self.ns.netns} " if self.ns.netns else ""
        return f"{prefix}{shlex.join(self.argv)} &"


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
    | Iptables
    | Process
)


@dataclass(frozen=True)
class ContainerSpec:
    key: str  # node name or ROUTER
    name: str  # docker container name
    hostname: str
    role: str
    sysctls: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    lab: Lab
    containers: tuple[ContainerSpec, ...]  # router first
    steps: dict[str, tuple[Op, ...]]  # router steps run first, then the nodes' in parallel

    def ops(self) -> list[tuple[str, Op]]:
        return [(key, op) for key, ops in self.steps.items() for op in ops]


def uplink_name(node: Node) -> str:
    """The router-side name of a node's eth0 peer: the node name when it fits in IFNAMSIZ."""
    if len(node.name) <= 15:
        return node.name
    return "n-" + hashlib.sha256(node.name.encode()).hexdigest()[:13]


_NODE_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.ipv4.conf.all.rp_filter": "0",
    "net.ipv4.conf.default.rp_filter": "0",
}


def compile_plan(lab: Lab) -> Plan:
    from labbuilder.cni import steps_for_node  # the CNI modes build on this module

    router = ContainerSpec(ROUTER, lab.router_name, "router", "router", dict(_NODE_SYSCTLS))
    nodes = tuple(
        ContainerSpec(n.name, lab.container_name(n.name), n.name, n.role, dict(_NODE_SYSCTLS)) for n in lab.nodes
    )
    steps: dict[str, tuple[Op, ...]] = {ROUTER: tuple(router_steps(lab))}
    for node in lab.nodes:
        steps[node.name] = tuple(uplink_steps(lab, node)) + tuple(steps_for_node(lab, node))
    return Plan(lab, (router, *nodes), steps)


def router_steps(lab: Lab) -> list[Op]:
    """The lab's sealed network: a bridge holding the gateway, and the VPC-style pod routes."""
    ns = Ns(ROUTER)
    net = lab.network
    ops: list[Op] = [
        Bridge(ns, net.bridge, mac=node_mac(net.gateway), mtu=lab.cni.mtu),
        Address(ns, net.bridge, str(net.gateway_interface)),
        LinkUp(ns, net.bridge),
    ]
    if lab.cni.routes == "router" and lab.cni.mode != "vxlan":
        ops += [Route(ns, str(n.pod_cidr), via=str(n.ip)) for n in lab.nodes if n.pod_cidr is not None]
    return ops


def uplink_steps(lab: Lab, node: Node) -> list[Op]:
    """eth0 of the node: a veth made in the router with its peer straight in the node."""
    router, here = Ns(ROUTER), Ns(node.name)
    peer = uplink_name(node)
    prefix = lab.network.cidr.prefixlen
    return [
        # Fixed MACs: the same spec gives the same `ip link` everywhere, across rebuilds and resets.
        Veth(
            router,
            peer,
            here,
            "eth0",
            mac=hashed_mac(lab.name, "uplink", node.name),
            peer_mac=node_mac(node.ip),
            mtu=lab.cni.mtu,
        ),
        Master(router, peer, lab.network.bridge),
        LinkUp(router, peer),
        Address(here, "eth0", f"{node.ip}/{prefix}"),
        LinkUp(here, "eth0"),
        Route(here, "default", via=str(lab.network.gateway), dev="eth0"),
    ]
