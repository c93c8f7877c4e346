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
    NFT_FIREWALL,
    NFT_LOCAL,
    NFT_SERVICE,
    NFT_TABLE,
    nft_endpoint_base,
    nft_port_base,
    service_port_name,
)
from labbuilder.compile.kubeproxy.rules import per_node
from labbuilder.compile.nft import Hook, NftTable, payload, transaction
from labbuilder.spec.model import Endpoint, Lab, Node, Service, ServicePort

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

    service: str  # the Cluster policy chain
    local: str  # the Local policy chain
    external: str
    firewall: str
    spn: str  # `ns/name:port`, the comment of its no-endpoint elements

    @classmethod
    def of(cls, svc: Service, port: ServicePort) -> PortChains:
        base = nft_port_base(svc.ref, port.protocol, port.name)
        spn = service_port_name(svc, port)
        return cls(NFT_SERVICE + base, NFT_LOCAL + base, NFT_EXTERNAL + base, NFT_FIREWALL + base, spn)


class _Port:
    """syncProxyRules for one service port on one node (`node` None: a lab without Local policies
    or source ranges, where every node's table is the same). proxy.CategorizeEndpoints: every
    endpoint is ready; the local ones run on this node."""

    def __init__(self, t: NftTable, lab: Lab, svc: Service, port: ServicePort, node: Node | None):
        self.t, self.svc, self.port, self.node = t, svc, port, node
        self.pods = str(lab.cluster.pod_cidr)  # the local-traffic detector: --cluster-cidr
        self.names = PortChains.of(svc, port)
        self.proto = port.protocol.lower()
        endpoints = svc.endpoints.get(port.name or str(port.port), ())
        self.externally = port.node_port is not None or bool(svc.external_ips or svc.load_balancer_ips)
        self.ext_local = svc.external_local and self.externally
        uses_cluster = not svc.internal_local or (self.externally and not self.ext_local)
        uses_local = svc.internal_local or self.ext_local
        here = node.name if node else None
        self.cluster_eps = endpoints if uses_cluster else ()
        self.local_eps = tuple(e for e in endpoints if e.node is not None and e.node == here) if uses_local else ()
        self.reachable = self.cluster_eps or self.local_eps  # every local endpoint is a cluster one too
        self.has_endpoints = bool(endpoints)
        self.has_internal = self.has_endpoints and (bool(self.local_eps) or not svc.internal_local)
        self.has_external = self.has_endpoints and (bool(self.local_eps) or not self.ext_local)
        self.internal = self.names.local if svc.internal_local else self.names.service
        # No endpoints at all: rejected (connection refused at once); none here under Local: dropped.
        refused = f"goto {REJECT_CHAIN}" if not self.has_endpoints else "drop"
        self.internal_verdict = self.external_verdict = refused
        self.uses_fw = bool(svc.load_balancer_ips and svc.load_balancer_source_ranges)

    def key(self, ip: object) -> str:
        return f"{ip} . {self.proto} . {self.port.port}"

    def chains(self) -> None:
        """Every chain and set first: the maps' verdicts and the rules' gotos name them."""
        t, names = self.t, self.names
        for ep in self.reachable:
            if self.svc.session_affinity:
                t.container(
                    "set", self.affinity(ep), "ipv4_addr", flags="dynamic,timeout", timeout=self.svc.affinity_timeout
                )
            t.chain(self.endpoint(ep))
        if self.cluster_eps:
            t.chain(names.service)
        if self.local_eps:
            t.chain(names.local)
        if self.has_endpoints and self.externally:
            t.chain(names.external)
        if self.uses_fw:
            t.chain(names.firewall)

    def endpoint(self, ep: Endpoint) -> str:
        return NFT_ENDPOINT + nft_endpoint_base(self.svc.ref, self.port.protocol, self.port.name, ep.ip, ep.port)

    def affinity(self, ep: Endpoint) -> str:
        return NFT_AFFINITY + nft_endpoint_base(self.svc.ref, self.port.protocol, self.port.name, ep.ip, ep.port)

    def elements(self) -> None:
        t, svc, names, proto = self.t, self.svc, self.names, self.proto
        t.element(CLUSTER_IPS, str(svc.cluster_ip))
        if self.has_internal:
            t.element(SERVICE_IPS, self.key(svc.cluster_ip), f"goto {self.internal}")
        else:
            t.element(NO_ENDPOINT_SERVICES, self.key(svc.cluster_ip), self.internal_verdict, names.spn)
        for ip in svc.external_ips:
            if self.has_endpoints:
                t.element(SERVICE_IPS, self.key(ip), f"goto {names.external}")
            if not self.has_external:
                t.element(NO_ENDPOINT_SERVICES, self.key(ip), self.external_verdict, names.spn)
        for ip in svc.load_balancer_ips:
            if self.has_endpoints:
                t.element(SERVICE_IPS, self.key(ip), f"goto {names.external}")
            if self.uses_fw:
                t.element(FIREWALL_IPS, self.key(ip), f"goto {names.firewall}")
        if not self.has_external:
            for ip in svc.load_balancer_ips:
                t.element(NO_ENDPOINT_SERVICES, self.key(ip), self.external_verdict, names.spn)
        if self.port.node_port is not None:
            node_port = f"{proto} . {self.port.node_port}"
            if self.has_endpoints:
                t.element(SERVICE_NODEPORTS, node_port, f"goto {names.external}")
            if not self.has_external:
                t.element(NO_ENDPOINT_NODEPORTS, node_port, self.external_verdict, names.spn)

    def rules(self) -> None:
        t, svc, names = self.t, self.svc, self.names
        if self.has_internal:  # off-cluster sources reaching a ClusterIP: the endpoint may be elsewhere
            t.add(self.internal, f"ip daddr {svc.cluster_ip} ip saddr != {self.pods} jump {MARK_MASQ}")
        if self.has_endpoints and self.externally:
            self.external_rules()
        if self.uses_fw:
            self.firewall_rule()
        if self.cluster_eps:
            self.balance(names.service, self.cluster_eps)
        if self.local_eps:
            self.balance(names.local, self.local_eps)
        for ep in self.reachable:
            chain = self.endpoint(ep)
            t.add(chain, f"ip saddr {ep.ip} jump {MARK_MASQ}")  # hairpin: a pod reaching itself
            if svc.session_affinity:
                t.add(chain, f"update @{self.affinity(ep)} {{ ip saddr }}")
            t.add(chain, f"meta l4proto {self.proto} dnat to {ep.ip}:{ep.port}")

    def external_rules(self) -> None:
        t, ext, names = self.t, self.names.external, self.names
        if not self.ext_local:  # the endpoint may be on another node: masquerade
            t.add(ext, f"jump {MARK_MASQ}")
        else:  # keep the client's address; pods and the node itself go the Cluster way
            t.add(ext, f'ip saddr {self.pods} goto {names.service} comment "short-circuit pod traffic"')
            t.add(ext, f'fib saddr type local jump {MARK_MASQ} comment "masquerade local traffic"')
            t.add(ext, f'fib saddr type local goto {names.service} comment "short-circuit local traffic"')
        if self.has_external:
            t.add(ext, f"goto {names.local if self.ext_local else names.service}")

    def firewall_rule(self) -> None:
        """Only the source ranges may use the LB IPs (and the LB IPs themselves, when the node is in
        a range: a node's request to its own LB IP loops back with that source)."""
        ranges = self.svc.load_balancer_source_ranges
        sources = [str(cidr) for cidr in ranges]
        if self.node is not None and any(self.node.ip in cidr for cidr in ranges):
            sources += [str(ip) for ip in self.svc.load_balancer_ips]
        self.t.add(self.names.firewall, f"ip saddr != {{ {' , '.join(sources)} }} drop")

    def balance(self, chain: str, endpoints: tuple[Endpoint, ...]) -> None:
        """writeServiceToEndpointRules: sticky sources first, then one random pick."""
        if self.svc.session_affinity:
            for ep in endpoints:
                self.t.add(chain, f"ip saddr @{self.affinity(ep)} goto {self.endpoint(ep)}")
        vmap = " , ".join(f"{i} : goto {self.endpoint(ep)}" for i, ep in enumerate(endpoints))
        self.t.add(chain, f"numgen random mod {len(endpoints)} vmap {{ {vmap} }}")


def add_service_port(t: NftTable, lab: Lab, svc: Service, port: ServicePort, node: Node | None = None) -> None:
    """One service port's chains, rules and map elements, as syncProxyRules writes them."""
    one = _Port(t, lab, svc, port, node)
    one.chains()
    one.rules()
    one.elements()


def kube_proxy_nftables(lab: Lab, node: Node | None = None, mark: str = MASQ_MARK) -> NftTable:
    """The table on `node`, but for the node's own address in `nodeport-ips` (see NftProxy). With
    node None, the table every node holds when no Local policy or source range makes them differ."""
    t = base_table(str(lab.cluster.service_cidr), mark)
    for svc in lab.services:
        if svc.headless:  # no ClusterIP: kube-proxy leaves it to DNS
            continue
        for port in svc.ports:
            add_service_port(t, lab, svc, port, node)
    return t


def nodeport_element(node: Node) -> str:
    return f"add element ip {NFT_TABLE} {NODEPORT_IPS} {{ {node.ip} }}"


class NftProxy:
    """A node's `nft -f` payload: the lab-wide table formatted once, plus each node's address
    (each node's own table when Local policies or source ranges make them differ)."""

    def __init__(self, lab: Lab):
        self.lab = lab
        self.shared = not per_node(lab)
        self.table = kube_proxy_nftables(lab)
        self._text = payload(self.table)

    def payload(self, node: Node) -> str:
        text = self._text if self.shared else payload(kube_proxy_nftables(self.lab, node))
        return text + nodeport_element(node) + "\n"


__all__ = ["NftProxy", "kube_proxy_nftables", "transaction"]
