"""kube-proxy's nftables mode as data: the table `ip kube-proxy` it programs on a node.

The shapes are those of pkg/proxy/nftables/proxier.go (setupNFTables and syncProxyRules), in
the words knftables writes them, so `transaction` reproduces upstream's expected dumps
(tests/unit/test_kubeproxy_nftables.py pins them). Dispatch is by verdict maps instead of rule
lists: `services` looks the packet's destination up in `service-ips` (and, for the node's own
addresses, `service-nodeports`); a service chain picks an endpoint with `numgen random mod N
vmap`; an endpoint chain DNATs. Services without endpoints are rejected through
`no-endpoint-services` from the filter hooks. kube-proxy's nftables mode accepts NodePorts on the
node's primary address only (`--nodeport-addresses primary`, its default there): the set
`nodeport-ips` holds it, the one node-specific element of the table.
"""

from __future__ import annotations

from dataclasses import dataclass

from labbuilder.compile.kubeproxy.names import (
    NFT_AFFINITY,
    NFT_ENDPOINT,
    NFT_EXTERNAL,
    NFT_SERVICE,
    NFT_TABLE,
    nft_endpoint_base,
    nft_port_base,
    service_port_name,
)
from labbuilder.compile.nft import Hook, NftTable, payload, transaction
from labbuilder.spec.model import Lab, Node, Service, ServicePort

MASQ_MARK = "0x004000"  # fmt.Sprintf("%#08x", 1<<14): --masquerade-bit 14, as in iptables mode

SERVICES, MARK_MASQ, MASQUERADING = "services", "mark-for-masquerade", "masquerading"
SERVICE_IPS, SERVICE_NODEPORTS, NODEPORT_IPS, CLUSTER_IPS = (
    "service-ips",
    "service-nodeports",
    "nodeport-ips",
    "cluster-ips",
)
NO_ENDPOINT_SERVICES, NO_ENDPOINT_NODEPORTS, FIREWALL_IPS = (
    "no-endpoint-services",
    "no-endpoint-nodeports",
    "firewall-ips",
)
REJECT_CHAIN, CLUSTER_IPS_CHECK, FIREWALL_CHECK = "reject-chain", "cluster-ips-check", "firewall-check"
SERVICE_ENDPOINTS_CHECK, NODEPORT_ENDPOINTS_CHECK = "service-endpoints-check", "nodeport-endpoints-check"

# Base chains: filtering before DNAT (it must see the service's own address), then NAT.
BASE_CHAINS = {
    "filter-prerouting-pre-dnat": Hook("filter", "prerouting", -110),
    "filter-output-pre-dnat": Hook("filter", "output", -110),
    "filter-forward": Hook("filter", "forward", 0),
    "filter-input": Hook("filter", "input", 0),
    "filter-output": Hook("filter", "output", 0),
    "nat-output": Hook("nat", "output", -100),
    "nat-postrouting": Hook("nat", "postrouting", 100),
    "nat-prerouting": Hook("nat", "prerouting", -100),
}
# (from, to, match) in kube-proxy's nftablesJumpChains order.
JUMPS = (
    ("filter-input", NODEPORT_ENDPOINTS_CHECK, "ct state new"),
    ("filter-input", SERVICE_ENDPOINTS_CHECK, "ct state new"),
    ("filter-forward", SERVICE_ENDPOINTS_CHECK, "ct state new"),
    ("filter-output", SERVICE_ENDPOINTS_CHECK, "ct state new"),
    ("filter-prerouting-pre-dnat", FIREWALL_CHECK, "ct state new"),
    ("filter-output-pre-dnat", FIREWALL_CHECK, "ct state new"),
    ("nat-output", SERVICES, ""),
    ("nat-prerouting", SERVICES, ""),
    ("nat-postrouting", MASQUERADING, ""),
    ("filter-forward", CLUSTER_IPS_CHECK, "ct state new"),
    ("filter-output", CLUSTER_IPS_CHECK, "ct state new"),
)
ADDR_KEY = "ipv4_addr . inet_proto . inet_service : verdict"
PORT_KEY = "inet_proto . inet_service : verdict"


def base_table(service_cidr: str, mark: str = MASQ_MARK) -> NftTable:
    """setupNFTables: the table, its sets and maps, base chains and their jumps, the masquerade
    chains, the no-endpoint and firewall checks, the service dispatch."""
    t = NftTable("ip", NFT_TABLE, "rules for kube-proxy")
    t.container("set", CLUSTER_IPS, "ipv4_addr", comment="Active ClusterIPs")
    t.container("set", NODEPORT_IPS, "ipv4_addr", comment="IPs that accept NodePort traffic")
    t.container("map", FIREWALL_IPS, ADDR_KEY, comment="destinations that are subject to LoadBalancerSourceRanges")
    t.container(
        "map",
        NO_ENDPOINT_NODEPORTS,
        PORT_KEY,
        comment="vmap to drop or reject packets to service nodeports with no endpoints",
    )
    t.container(
        "map", NO_ENDPOINT_SERVICES, ADDR_KEY, comment="vmap to drop or reject packets to services with no endpoints"
    )
    t.container("map", SERVICE_IPS, ADDR_KEY, comment="ClusterIP, ExternalIP and LoadBalancer IP traffic")
    t.container("map", SERVICE_NODEPORTS, PORT_KEY, comment="NodePort traffic")
    for name, hook in BASE_CHAINS.items():
        t.chain(name, hook)
    for _, to, _ in JUMPS:
        t.chain(to)
    for name in (SERVICES, CLUSTER_IPS_CHECK, MASQUERADING, MARK_MASQ):
        t.chain(name)
    for src, to, match in JUMPS:
        t.add(src, f"{match} jump {to}".strip())
    t.add(MARK_MASQ, f"mark set mark or {mark}")
    t.add(MASQUERADING, f"mark and {mark} == 0 return")
    t.add(MASQUERADING, f"mark set mark xor {mark}")
    t.add(MASQUERADING, "masquerade fully-random")
    t.add(CLUSTER_IPS_CHECK, f'ip daddr @{CLUSTER_IPS} reject comment "Reject traffic to invalid ports of ClusterIPs"')
    t.add(CLUSTER_IPS_CHECK, f'ip daddr {{ {service_cidr} }} drop comment "Drop traffic to unallocated ClusterIPs"')
    t.add(NODEPORT_ENDPOINTS_CHECK, f"ip daddr @{NODEPORT_IPS} meta l4proto . th dport vmap @{NO_ENDPOINT_NODEPORTS}")
    t.chain(REJECT_CHAIN, comment="helper for @no-endpoint-services / @no-endpoint-nodeports")
    t.add(REJECT_CHAIN, "reject")
    t.add(SERVICE_ENDPOINTS_CHECK, f"ip daddr . meta l4proto . th dport vmap @{NO_ENDPOINT_SERVICES}")
    t.add(FIREWALL_CHECK, f"ip daddr . meta l4proto . th dport vmap @{FIREWALL_IPS}")
    t.add(SERVICES, f"ip daddr . meta l4proto . th dport vmap @{SERVICE_IPS}")
    t.add(SERVICES, f"ip daddr @{NODEPORT_IPS} meta l4proto . th dport vmap @{SERVICE_NODEPORTS}")
    return t


@dataclass(frozen=True)
class PortChains:
    """The names kube-proxy gives one service port's chains."""

    service: str
    external: str
    spn: str  # `ns/name:port`, the comment of its no-endpoint elements

    @classmethod
    def of(cls, svc: Service, port: ServicePort) -> PortChains:
        base = nft_port_base(svc.ref, port.protocol, port.name)
        return cls(NFT_SERVICE + base, NFT_EXTERNAL + base, service_port_name(svc, port))


def add_service_port(t: NftTable, lab: Lab, svc: Service, port: ServicePort) -> None:
    """syncProxyRules for one service port (externalTrafficPolicy and internalTrafficPolicy Cluster)."""
    proto = port.protocol.lower()
    names = PortChains.of(svc, port)
    endpoints = svc.endpoints.get(port.name or str(port.port), ())
    key = f"{svc.cluster_ip} . {proto} . {port.port}"
    t.element(CLUSTER_IPS, str(svc.cluster_ip))
    if not endpoints:  # rejected in the filter hooks, before any NAT could happen
        t.element(NO_ENDPOINT_SERVICES, key, f"goto {REJECT_CHAIN}", names.spn)
        if port.node_port is not None:
            t.element(NO_ENDPOINT_NODEPORTS, f"{proto} . {port.node_port}", f"goto {REJECT_CHAIN}", names.spn)
        return

    chains = [
        (NFT_ENDPOINT + base, NFT_AFFINITY + base, ep)
        for ep in endpoints
        for base in [nft_endpoint_base(svc.ref, port.protocol, port.name, ep.ip, ep.port)]
    ]
    for _, affinity, _ in chains if svc.session_affinity else ():
        t.container("set", affinity, "ipv4_addr", flags="dynamic,timeout", timeout=svc.affinity_timeout)
    for endpoint, _, _ in chains:
        t.chain(endpoint)
    t.chain(names.service)
    # Off-cluster sources reaching a ClusterIP are masqueraded: the endpoint may be on another node.
    t.add(names.service, f"ip daddr {svc.cluster_ip} ip saddr != {lab.cluster.pod_cidr} jump {MARK_MASQ}")
    for endpoint, affinity, _ in chains if svc.session_affinity else ():  # sticky first
        t.add(names.service, f"ip saddr @{affinity} goto {endpoint}")
    vmap = " , ".join(f"{i} : goto {endpoint}" for i, (endpoint, _, _) in enumerate(chains))
    t.add(names.service, f"numgen random mod {len(chains)} vmap {{ {vmap} }}")
    if port.node_port is not None:
        t.chain(names.external)
        t.add(names.external, f"jump {MARK_MASQ}")  # Cluster policy: the endpoint may be on another node
        t.add(names.external, f"goto {names.service}")
    for endpoint, affinity, ep in chains:
        t.add(endpoint, f"ip saddr {ep.ip} jump {MARK_MASQ}")  # hairpin: a pod reaching itself
        if svc.session_affinity:
            t.add(endpoint, f"update @{affinity} {{ ip saddr }}")
        t.add(endpoint, f"meta l4proto {proto} dnat to {ep.ip}:{ep.port}")
    t.element(SERVICE_IPS, key, f"goto {names.service}")
    if port.node_port is not None:
        t.element(SERVICE_NODEPORTS, f"{proto} . {port.node_port}", f"goto {names.external}")


def kube_proxy_nftables(lab: Lab, mark: str = MASQ_MARK) -> NftTable:
    """The table on every node, but for the node's own address in `nodeport-ips` (see NftProxy)."""
    t = base_table(str(lab.cluster.service_cidr), mark)
    for svc in lab.services:
        if svc.headless:  # no ClusterIP: kube-proxy leaves it to DNS
            continue
        for port in svc.ports:
            add_service_port(t, lab, svc, port)
    return t


def nodeport_element(node: Node) -> str:
    return f"add element ip {NFT_TABLE} {NODEPORT_IPS} {{ {node.ip} }}"


class NftProxy:
    """A node's `nft -f` payload: the lab-wide table formatted once, plus each node's address."""

    def __init__(self, lab: Lab):
        self.table = kube_proxy_nftables(lab)
        self._text = payload(self.table)

    def payload(self, node: Node) -> str:
        return self._text + nodeport_element(node) + "\n"


__all__ = ["NftProxy", "kube_proxy_nftables", "transaction"]
