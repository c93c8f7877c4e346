"""Model → Plan: per-container ordered operations, pure data.

The plan is everything `up` will do, as data: the containers (name, hostname, labels,
capabilities, sysctls) and, per container, the operations of `ops` in order. The router's steps
run first (its bridge holds the other ends of the nodes' uplinks), then the nodes', in
parallel. `plan` and `render` print it; `apply`, `diff` and `reset` read it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property

from labbuilder.compile import announce, kubelet, pki
from labbuilder.compile.cni import mode_for
from labbuilder.compile.kubeproxy import kube_proxy_tables, per_node
from labbuilder.compile.netfilter import Restore
from labbuilder.compile.ops import ROUTER, Address, Bridge, Iptables, LinkUp, Master, Ns, Op, Route, Veth
from labbuilder.spec.addressing import hashed_mac, node_mac
from labbuilder.spec.model import Lab, Node

# Container labels: how every command finds a lab's containers without its file.
LABEL_LAB = "labbuilder.lab"
LABEL_NODE = "labbuilder.node"
LABEL_ROLE = "labbuilder.role"
LABEL_SPEC = "labbuilder.spec-hash"
LABEL_FLEET = "labbuilder.fleet"  # the fleet a lab belongs to (`labbuilder fleet`): its only record
CAPS = ("NET_ADMIN", "SYS_ADMIN", "NET_RAW")  # explicit capabilities: a lab container is never privileged
_NODE_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.ipv4.conf.all.rp_filter": "0",
    "net.ipv4.conf.default.rp_filter": "0",
}


@dataclass(frozen=True)
class ContainerSpec:
    key: str  # node name or ROUTER
    name: str  # docker container name
    hostname: str
    role: str
    sysctls: dict[str, str] = field(default_factory=dict)
    caps: tuple[str, ...] = CAPS


@dataclass(frozen=True)
class Plan:
    lab: Lab
    containers: tuple[ContainerSpec, ...]  # router first
    steps: dict[str, tuple[Op, ...]]  # router steps run first, then the nodes' in parallel

    def ops(self) -> list[tuple[str, Op]]:
        return [(key, op) for key, ops in self.steps.items() for op in ops]

    @cached_property
    def digest(self) -> str:
        """A hash of every operation: a running lab built from another spec carries another.
        Computed once: every container's labels carry it, and a big plan has many operations."""
        text = "\n".join(f"{key}: {op.describe()}" for key, op in self.ops())
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def labels(self, container: ContainerSpec) -> dict[str, str]:
        return {
            LABEL_LAB: self.lab.name,
            LABEL_NODE: container.key,
            LABEL_ROLE: container.role,
            LABEL_SPEC: self.digest,
        }

    def container(self, key: str) -> ContainerSpec:
        return next(c for c in self.containers if c.key == key)

    @property
    def nodes(self) -> list[str]:
        return [key for key in self.steps if key != ROUTER]


def uplink_name(node: Node) -> str:
    """The router-side name of a node's eth0 peer: the node name when it fits in IFNAMSIZ."""
    if len(node.name) <= 15:
        return node.name
    return "n-" + hashlib.sha256(node.name.encode()).hexdigest()[:13]


def compile_plan(lab: Lab) -> Plan:
    router = ContainerSpec(ROUTER, lab.router_name, "router", "router", dict(_NODE_SYSCTLS))
    nodes = tuple(
        ContainerSpec(n.name, lab.container_name(n.name), n.name, n.role, dict(_NODE_SYSCTLS)) for n in lab.nodes
    )
    steps: dict[str, tuple[Op, ...]] = {ROUTER: tuple(router_steps(lab))}
    shared = None if per_node(lab) else Restore(kube_proxy_tables(lab))  # computed and formatted once
    for node in lab.nodes:
        proxy = shared or Restore(kube_proxy_tables(lab, node))  # Local policies: each node its own
        steps[node.name] = tuple(uplink_steps(lab, node)) + tuple(node_steps(lab, node, proxy))
    return Plan(lab, (router, *nodes), steps)


def node_steps(lab: Lab, node: Node, proxy: Restore) -> list[Op]:
    """What the CNI mode, kube-proxy (its tables, `proxy`) and the kubelet make on a node."""
    mode = mode_for(lab)
    # kube-proxy's rules come first: its POSTROUTING jump (hairpin masquerade) must run before the
    # CNI plugin's ACCEPTs, as kube-proxy prepends it.
    return [
        *mode.links(lab, node),
        Iptables(Ns(node.name), proxy.render(mode.masquerade(lab, node))),
        *pki.node_files(lab, node.name),
        *kubelet.resolv_files(lab, node),
        *kubelet.pod_processes(lab, node),
    ]


def router_steps(lab: Lab) -> list[Op]:
    """The lab's sealed network: a bridge holding the gateway, and the VPC-style pod routes."""
    ns = Ns(ROUTER)
    net = lab.network
    ops: list[Op] = [
        Bridge(ns, net.bridge, mac=node_mac(net.gateway), mtu=lab.cni.mtu),
        Address(ns, net.bridge, str(net.gateway_interface)),
        LinkUp(ns, net.bridge),
    ]
    if mode_for(lab).router_routes(lab):
        ops += [Route(ns, str(n.pod_cidr), via=str(n.ip)) for n in lab.nodes if n.pod_cidr is not None]
    # LoadBalancer and external IPs: to the node that takes each, as a cloud load balancer would.
    ops += [Route(ns, f"{ip}/32", via=str(node.ip)) for ip, node in announce.routes(lab)]
    return [*ops, *pki.router_files(lab, ROUTER)]


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
