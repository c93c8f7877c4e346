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
from labbuilder.compile.kubeproxy.mode import KubeProxy
from labbuilder.compile.labels import LABEL_LAB, LABEL_NODE, LABEL_ROLE, LABEL_SPEC
from labbuilder.compile.netpol.kube_router import KubeRouter, kube_router
from labbuilder.compile.ops import ROUTER, Address, Bridge, Ipsets, LinkUp, Master, Ns, Op, Route, Veth
from labbuilder.spec.addressing import hashed_mac, node_mac
from labbuilder.spec.model import Lab, Node

CAPS = ("NET_ADMIN", "SYS_ADMIN", "NET_RAW")  # explicit capabilities: a lab container is never privileged
_NODE_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.ipv4.conf.all.rp_filter": "0",
    "net.ipv4.conf.default.rp_filter": "0",
    # IPv6 off, as Docker's `--network none` sandbox has it (nodes start with networking disabled:
    # engine/runtime.LabHandle.create)
    "net.ipv6.conf.all.disable_ipv6": "1",
    "net.ipv6.conf.default.disable_ipv6": "1",
    "net.ipv6.conf.lo.disable_ipv6": "1",
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
    netpol = kube_router(lab)
    # kube-router's top-level jumps come first in the builtin chains (it inserts them at position
    # 1), then kube-proxy's rules, computed and formatted once (per node only what Local policies
    # make differ).
    proxy = KubeProxy(lab, first=netpol.shared if netpol else ())
    for node in lab.nodes:
        steps[node.name] = tuple(uplink_steps(lab, node)) + tuple(node_steps(lab, node, proxy, netpol))
    return Plan(lab, (router, *nodes), steps)


def node_steps(lab: Lab, node: Node, proxy: KubeProxy, netpol: KubeRouter | None = None) -> list[Op]:
    """What the CNI mode, kube-proxy (its rules, `proxy`), kube-router's network-policy
    controller (`netpol`, when the lab has policies) and the kubelet make on a node."""
    mode = mode_for(lab)
    # kube-proxy's rules come first: its POSTROUTING jump (hairpin masquerade) must run before the
    # CNI plugin's ACCEPTs, as kube-proxy prepends it. kube-router's pod firewalls are the node's own.
    own = [*mode.masquerade(lab, node), *(netpol.node_tables(node) if netpol else ())]
    sets = [Ipsets(Ns(node.name), netpol.restore)] if netpol and netpol.ipsets else []
    return [
        *mode.links(lab, node),
        *sets,
        *proxy.ops(node, own),
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
