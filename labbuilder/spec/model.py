"""The validated lab model: plain data with every address resolved.

Built by `resolve.build_model` from a checked spec; read by the planner, the renderers and
the views. Nothing here performs I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Literal

from labbuilder.spec.keys import ROUTER

__all__ = ["ROUTER"]  # re-exported: the model's users name the router from here

Role = Literal["controller", "worker"]
Protocol = Literal["TCP", "UDP", "SCTP"]
CniMode = Literal["bridge", "ptp", "vxlan"]
RouteMode = Literal["router", "nodes"]
ProxyStyle = Literal["current", "2018"]
ProxyMode = Literal["iptables", "nftables"]  # ipvs is refused at validation (resolve)
ServiceType = Literal["ClusterIP", "NodePort", "LoadBalancer"]
TrafficPolicy = Literal["Cluster", "Local"]  # externalTrafficPolicy / internalTrafficPolicy
PodApp = Literal["server", "dns"]
PolicyType = Literal["Ingress", "Egress"]
SelectorOperator = Literal["In", "NotIn", "Exists", "DoesNotExist"]
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # the apiserver sets it on every namespace


@dataclass(frozen=True)
class NodeNetwork:
    cidr: IPv4Network
    gateway: IPv4Address  # the router's address on the node network
    bridge: str = "lab0"  # bridge name inside the router container

    @property
    def gateway_interface(self) -> IPv4Interface:
        return IPv4Interface(f"{self.gateway}/{self.cidr.prefixlen}")


@dataclass(frozen=True)
class Cluster:
    pod_cidr: IPv4Network
    node_mask_size: int
    service_cidr: IPv4Network
    dns_ip: IPv4Address
    domain: str = "cluster.local"
    dns: bool = True  # run a DNS pod behind kube-system/kube-dns at dns_ip
    version: str = "v1.33.0"  # the gitVersion the apiserver's /version answers


@dataclass(frozen=True)
class Cni:
    mode: CniMode = "bridge"
    bridge: str = "cnio0"
    ip_masq: bool = True
    routes: RouteMode = "router"
    mtu: int = 1500
    hairpin: bool = True  # bridge plugin hairpinMode: a pod can reach itself through a service
    network_name: str = "bridge"  # CNI network name: conf `name`, host-local state dir
    cni_version: str = "0.3.1"


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    node: str
    ip: IPv4Address
    labels: dict[str, str]
    ports: tuple[PodPort, ...]
    netns: str  # cni-<uuid>
    container_id: str  # 64 hex, what the CNI plugin is called with
    host_veth: str  # veth<8 hex> on the node
    workload: str | None = None
    app: PodApp = "server"  # what the pod runs: the answering server, or the cluster DNS

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class PodPort:
    port: int
    protocol: Protocol = "TCP"
    name: str = (
        ""  # a container port's name: a service's `targetPort: NAME` and a policy's `port: NAME` resolve to it, per pod
    )


@dataclass(frozen=True)
class Node:
    name: str
    role: Role
    ip: IPv4Address
    pod_cidr: IPv4Network | None
    pods: tuple[Pod, ...] = ()
    listen_ports: tuple[int, ...] = ()  # node-level servers (apiserver :6443 on controllers)

    @property
    def runs_pods(self) -> bool:
        return self.pod_cidr is not None

    @property
    def pod_gateway(self) -> IPv4Address:
        assert self.pod_cidr is not None
        return self.pod_cidr.network_address + 1


@dataclass(frozen=True)
class Endpoint:
    ip: IPv4Address
    port: int
    node: str | None  # None for endpoints that are not pods (controllers' :6443 are nodes)
    target: str  # pod or node name, for views and traces


@dataclass(frozen=True)
class ServicePort:
    port: int
    target_port: int | str  # a number, or a container port's name (resolved per pod into Endpoint.port)
    protocol: Protocol = "TCP"
    name: str = ""
    node_port: int | None = None


@dataclass(frozen=True)
class Service:
    name: str
    namespace: str
    type: ServiceType
    cluster_ip: IPv4Address | None  # None: a headless service (`clusterIP: None`), DNS only
    ports: tuple[ServicePort, ...]
    selector: dict[str, str]
    # Endpoints per port name, in the order kube-proxy sorts them.
    endpoints: dict[str, tuple[Endpoint, ...]] = field(default_factory=dict)
    session_affinity: bool = False
    affinity_timeout: int = 10800
    external_traffic_policy: TrafficPolicy = "Cluster"  # Local: node ports and LB IPs to local endpoints only
    internal_traffic_policy: TrafficPolicy = "Cluster"  # Local: the ClusterIP to the client node's endpoints only
    external_ips: tuple[IPv4Address, ...] = ()  # `externalIPs`: routed to the nodes by the lab's router
    load_balancer_ips: tuple[IPv4Address, ...] = ()  # type LoadBalancer: status.loadBalancer.ingress
    load_balancer_source_ranges: tuple[IPv4Network, ...] = ()  # only these clients may use the LB IPs
    health_check_node_port: int | None = None  # LoadBalancer + Local: kube-proxy answers /healthz here

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def headless(self) -> bool:
        """No ClusterIP: kube-proxy leaves it alone, DNS answers with its endpoints' addresses."""
        return self.cluster_ip is None

    @property
    def external_local(self) -> bool:
        """Traffic from outside (node ports, external and LB IPs) goes to local endpoints only.

        kube-proxy's ExternalPolicyForExternalIP: the policy only matters when something external
        reaches the service, that is a NodePort/LoadBalancer type or an external IP."""
        externally = self.type != "ClusterIP" or bool(self.external_ips)
        return externally and self.external_traffic_policy == "Local"

    @property
    def internal_local(self) -> bool:
        return self.internal_traffic_policy == "Local"


@dataclass(frozen=True)
class HttpCheck:
    """An HTTP(S) request a check makes with curl, and the answer it expects."""

    path: str = "/"
    status: int = 200
    tls: bool = False  # https
    ca: Literal["lab"] | None = None  # verify with the lab's CA (its path in the node); None with tls: -k
    host: str | None = None  # the name to dial instead of the target's address (resolved by the source)
    contains: str | None = None  # a text the body must hold


@dataclass(frozen=True)
class MatrixCheck:
    """Every serving pod to every other on one port: the measured truth table must equal `expect`,
    or when it is None, the table the lab's NetworkPolicies imply."""

    port: int = 80
    protocol: Protocol = "TCP"
    group: Literal["pods", "namespaces"] = "pods"
    expect: str | None = None  # a truth table as the e2e suite prints it (spec/truthtable.py)


@dataclass(frozen=True)
class Check:
    """One thing `labbuilder check` verifies: reach, a route, a DNS answer, a NAT translation."""

    name: str
    source: str | None = None  # node/NAME or pod/NAME
    target: str | None = None  # node/, pod/, service/NAME, IP or IP:PORT
    expect: Literal["reach", "no-reach"] = "reach"
    protocol: Literal["icmp", "tcp", "udp"] | None = None
    port: int | None = None
    nat: Literal["snat", "dnat", "none"] | None = None
    on: str | None = None  # for route checks
    route: str | None = None
    dns: str | None = None
    answer: str | None = None
    http: HttpCheck | None = None  # a reach check that also makes this request
    matrix: MatrixCheck | None = None  # the reachability matrix of the lab's pods


@dataclass(frozen=True)
class SelectorRequirement:
    key: str
    operator: SelectorOperator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return self.key in labels and labels[self.key] in self.values
        if self.operator == "NotIn":  # as labels.Selector: a missing key is "not in" any set
            return self.key not in labels or labels[self.key] not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels


@dataclass(frozen=True)
class LabelSelector:
    """metav1.LabelSelector: every matchLabels pair AND every expression; the empty selector selects all."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[SelectorRequirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels) and all(
            e.matches(labels) for e in self.match_expressions
        )

    @property
    def empty(self) -> bool:
        return not self.match_labels and not self.match_expressions

    def __str__(self) -> str:
        """As kubectl prints a selector (metav1.FormatLabelSelector): requirements sorted by key,
        values sorted — `pod=a,tier in (db,web)`, `!canary` — and `<none>` for the empty one."""
        parts = [(k, f"{k}={v}") for k, v in self.match_labels]
        for e in self.match_expressions:
            values = ",".join(sorted(e.values))
            text = {"In": f"{e.key} in ({values})", "NotIn": f"{e.key} notin ({values})", "Exists": e.key}
            parts.append((e.key, text.get(e.operator, f"!{e.key}")))
        return ",".join(text for _, text in sorted(parts, key=lambda part: part[0])) or "<none>"


@dataclass(frozen=True)
class IPBlock:
    cidr: IPv4Network
    except_: tuple[IPv4Network, ...] = ()

    def __contains__(self, ip: object) -> bool:
        return isinstance(ip, IPv4Address) and ip in self.cidr and not any(ip in e for e in self.except_)


@dataclass(frozen=True)
class PolicyPeer:
    """One `from`/`to` item: an ipBlock, or pods chosen by podSelector and/or namespaceSelector (AND)."""

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None


@dataclass(frozen=True)
class PolicyPort:
    protocol: Protocol = "TCP"
    port: int | str | None = None  # None: every port of the protocol; str: a named port
    end_port: int | None = None


@dataclass(frozen=True)
class PolicyRule:
    """One ingress or egress rule: no peers means every peer, no ports every port."""

    peers: tuple[PolicyPeer, ...] = ()
    ports: tuple[PolicyPort, ...] = ()


@dataclass(frozen=True)
class NetworkPolicy:
    name: str
    namespace: str
    pod_selector: LabelSelector
    policy_types: tuple[PolicyType, ...]
    ingress: tuple[PolicyRule, ...] = ()
    egress: tuple[PolicyRule, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Namespace:
    name: str
    labels: tuple[tuple[str, str], ...]  # always holds kubernetes.io/metadata.name=<name>

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


@dataclass(frozen=True)
class LoadBalancerRange:
    """`loadBalancer: {range: CIDR}`: the addresses a cloud load-balancer controller hands to
    services of type LoadBalancer, in order. The lab's router routes each to a node (compile.plan)."""

    range: IPv4Network


@dataclass(frozen=True)
class HostKernel:
    """What the host kernel offers that a lab may need. Read from /proc by the layers that may do
    I/O (engine.kernel) and handed to resolve; the defaults (everything there) keep pure callers,
    unit tests and a running lab's own model free of host facts."""

    sctp: bool = True  # /proc/net/sctp: the sctp module is loaded
    ipvs: bool = True  # /proc/net/ip_vs: IPVS, which kube-proxy's ipvs mode needs


@dataclass(frozen=True)
class Lab:
    name: str
    network: NodeNetwork
    cluster: Cluster
    cni: Cni
    nodes: tuple[Node, ...]
    services: tuple[Service, ...] = ()
    checks: tuple[Check, ...] = ()
    proxy_style: ProxyStyle = "current"
    proxy_mode: ProxyMode = "iptables"  # kube-proxy --proxy-mode
    load_balancer: LoadBalancerRange | None = None
    namespaces: tuple[Namespace, ...] = ()  # every namespace pods, services or policies use
    network_policies: tuple[NetworkPolicy, ...] = ()

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def namespace(self, name: str) -> Namespace:
        for namespace in self.namespaces:
            if namespace.name == name:
                return namespace
        # A namespace the lab never declared still carries the label the apiserver always sets.
        return Namespace(name, ((NAMESPACE_NAME_LABEL, name),))

    @property
    def pods(self) -> tuple[Pod, ...]:
        return tuple(pod for node in self.nodes for pod in node.pods)

    def container_name(self, node: str) -> str:
        return f"{self.name}-{node}"

    @property
    def router_name(self) -> str:
        return f"{self.name}-router"
