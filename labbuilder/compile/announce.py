"""Which node the lab's router sends a LoadBalancer or external IP to.

A cloud load balancer (or MetalLB on bare metal) gets a service's traffic to a node, where
kube-proxy's KUBE-SERVICES rules catch the address. The lab does it as MetalLB's layer-2 mode
does, which a learner can see with one `ip route` in the router: one node takes each address,
chosen by sorting the candidates by sha256(node + "#" + ip) (its speaker's election); under
externalTrafficPolicy Local only nodes running an endpoint of the service are candidates (an
announcing node without one would drop the traffic), otherwise every worker (control-plane nodes
are excluded from external load balancers, as kubeadm labels them). The router holds the result
as a /32 route via the node instead of an ARP answer: the same next hop, with no daemon to run.
External IPs get the same treatment; on a real cluster an administrator routes them by hand.
"""

from __future__ import annotations

import hashlib
from ipaddress import IPv4Address

from labbuilder.spec.model import Lab, Node, Service


def candidates(lab: Lab, svc: Service) -> list[Node]:
    workers = [n for n in lab.nodes if n.role == "worker"]
    if not svc.external_local:
        return workers
    local = {e.node for eps in svc.endpoints.values() for e in eps}
    return [n for n in workers if n.name in local]


def announcer(lab: Lab, svc: Service, ip: IPv4Address) -> Node | None:
    """The node that takes `ip` (MetalLB's layer2 ShouldAnnounce), None when no node may."""
    nodes = candidates(lab, svc)
    return min(nodes, key=lambda n: hashlib.sha256(f"{n.name}#{ip}".encode()).digest(), default=None)


def routes(lab: Lab) -> list[tuple[IPv4Address, Node]]:
    """(address, node) for every LoadBalancer and external IP of the lab that some node takes; an
    address several services share (each on its own ports) goes where the first one sends it."""
    out: dict[IPv4Address, Node] = {}
    for svc in lab.services:
        if svc.headless:
            continue
        for ip in (*svc.load_balancer_ips, *svc.external_ips):
            node = announcer(lab, svc, ip)
            if node is not None:
                out.setdefault(ip, node)
    return list(out.items())
