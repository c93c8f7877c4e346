"""Spec → Model: apply defaults, check what the schema cannot say, resolve every address.

Every problem found is collected with its location so that `validate` prints them all at
once; `build_model` raises SpecError when any is an error (warnings are kept on the result).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, ip_address, ip_network
from typing import Any

from labbuilder import addressing
from labbuilder.errors import Problem, SpecError
from labbuilder.model import (
    Check,
    Cluster,
    Cni,
    Endpoint,
    Lab,
    Node,
    NodeNetwork,
    Pod,
    PodPort,
    Service,
    ServicePort,
)
from labbuilder.spec import Path_, Spec

APISERVER_PORT = 6443
DEFAULTS: dict[str, Any] = {
    "network": {"cidr": "10.240.0.0/24"},
    "cluster": {
        "podCIDR": "10.200.0.0/16",
        "nodeMaskSize": 24,
        "serviceCIDR": "10.32.0.0/24",
        "dnsIP": "10.32.0.10",
        "domain": "cluster.local",
    },
    "cni": {"mode": "bridge", "bridge": "cnio0", "ipMasq": True, "routes": "router", "mtu": 1500},
}


@dataclass
class Resolved:
    lab: Lab
    warnings: list[Problem] = field(default_factory=list)


class _Resolver:
    def __init__(self, spec: Spec):
        self.spec = spec
        self.data = spec.data
        self.problems: list[Problem] = []

    # -- helpers -------------------------------------------------------------------------
    def error(self, path: Path_, message: str, hint: str = "") -> None:
        self.problems.append(self.spec.problem(path, message, hint))

    def warn(self, path: Path_, message: str, hint: str = "") -> None:
        self.problems.append(self.spec.problem(path, message, hint, warning=True))

    def section(self, name: str) -> dict[str, Any]:
        return {**DEFAULTS.get(name, {}), **self.data.get(name, {})}

    def network(self, path: Path_, text: str) -> IPv4Network | None:
        try:
            return IPv4Network(text)
        except ValueError:
            try:
                loose = ip_network(text, strict=False)
                self.error(path, f"{text} has host bits set", f"did you mean {loose}?")
            except ValueError:
                self.error(path, f"{text} is not a valid IPv4 network", "write it as 10.200.0.0/24")
        return None

    def address(self, path: Path_, text: str) -> IPv4Address | None:
        try:
            ip = ip_address(text)
        except ValueError:
            self.error(path, f"{text} is not a valid IPv4 address", "write it as 10.240.0.10")
            return None
        assert isinstance(ip, IPv4Address)
        return ip

    # -- sections --------------------------------------------------------------------------
    def resolve(self) -> Lab | None:
        net_cfg, cluster_cfg, cni_cfg = self.section("network"), self.section("cluster"), self.section("cni")
        node_net = self.network(("network", "cidr"), net_cfg["cidr"])
        pod_net = self.network(("cluster", "podCIDR"), cluster_cfg["podCIDR"])
        svc_net = self.network(("cluster", "serviceCIDR"), cluster_cfg["serviceCIDR"])
        dns_ip = self.address(("cluster", "dnsIP"), cluster_cfg["dnsIP"])
        if not (node_net and pod_net and svc_net and dns_ip):
            return None
        self.check_disjoint(
            {
                ("network", "cidr"): node_net,
                ("cluster", "podCIDR"): pod_net,
                ("cluster", "serviceCIDR"): svc_net,
            }
        )
        if dns_ip not in svc_net:
            self.error(
                ("cluster", "dnsIP"),
                f"dnsIP {dns_ip} is outside serviceCIDR {svc_net}",
                f"pick an address inside {svc_net}, such as {svc_net.network_address + 10}",
            )
        mask = cluster_cfg["nodeMaskSize"]
        if mask < pod_net.prefixlen:
            self.error(
                ("cluster", "nodeMaskSize"),
                f"nodeMaskSize /{mask} is larger than podCIDR {pod_net}",
                f"use a prefix of at least {pod_net.prefixlen}",
            )
            return None
        network = self.node_network(node_net, net_cfg, cni_cfg)
        if network is None:
            return None
        cluster = Cluster(pod_net, mask, svc_net, dns_ip, cluster_cfg["domain"])
        cni = Cni(
            mode=cni_cfg["mode"],
            bridge=cni_cfg["bridge"],
            ip_masq=cni_cfg["ipMasq"],
            routes=cni_cfg["routes"],
            mtu=cni_cfg["mtu"],
        )
        nodes = self.nodes(network, cluster)
        if nodes is None:
            return None
        nodes = self.place_pods(nodes)
        services = self.services(cluster, nodes)
        style = self.data.get("kubeProxy", {}).get("style", "current")
        checks = tuple(
            Check(c["from"], c["to"], c.get("expect", "reach"), c.get("protocol"), c.get("port"))
            for c in self.data.get("checks", [])
        )
        return Lab(self.data["name"], network, cluster, cni, tuple(nodes), services, checks, style)

    def check_disjoint(self, ranges: dict[Path_, IPv4Network]) -> None:
        items = list(ranges.items())
        for i, (path_a, a) in enumerate(items):
            for path_b, b in items[i + 1 :]:
                if a.overlaps(b):
                    self.error(
                        path_b,
                        f"{b} overlaps {a} ({'.'.join(map(str, path_a))})",
                        "node, pod and service ranges must be disjoint",
                    )

    def node_network(self, cidr: IPv4Network, cfg: dict[str, Any], cni_cfg: dict[str, Any]) -> NodeNetwork | None:
        if cidr.num_addresses < 4:
            self.error(("network", "cidr"), f"{cidr} is too small for a router and nodes", "use a /29 or larger")
            return None
        gateway = next(cidr.hosts())
        if "gateway" in cfg:
            given = self.address(("network", "gateway"), cfg["gateway"])
            if given is None:
                return None
            if given not in cidr or given in (cidr.network_address, cidr.broadcast_address):
                self.error(("network", "gateway"), f"gateway {given} is not a host address of {cidr}")
                return None
            gateway = given
        return NodeNetwork(cidr, gateway)

    def nodes(self, network: NodeNetwork, cluster: Cluster) -> list[Node] | None:
        specs: list[dict[str, Any]] = self.data["nodes"]
        names = Counter(n["name"] for n in specs)
        for i, n in enumerate(specs):
            if names[n["name"]] > 1:
                self.error(
                    ("nodes", i, "name"),
                    f"node name {n['name']!r} is used {names[n['name']]} times",
                    "node names must be unique",
                )
        ips = self.node_ips(network, specs)
        cidrs = self.node_pod_cidrs(cluster, specs)
        if ips is None or cidrs is None:
            return None
        return [
            Node(
                n["name"],
                n.get("role", "worker"),
                ip,
                cidr,
                listen_ports=(APISERVER_PORT,) if n.get("role") == "controller" else (),
            )
            for n, ip, cidr in zip(specs, ips, cidrs, strict=True)
        ]

    def node_ips(self, network: NodeNetwork, specs: list[dict[str, Any]]) -> list[IPv4Address] | None:
        given: dict[int, IPv4Address] = {}
        seen: dict[IPv4Address, int] = {}
        for i, n in enumerate(specs):
            if "ip" not in n:
                continue
            path = ("nodes", i, "ip")
            ip = self.address(path, n["ip"])
            if ip is None:
                continue
            if ip not in network.cidr or ip in (network.cidr.network_address, network.cidr.broadcast_address):
                self.error(path, f"{ip} is not a host address of the node network {network.cidr}")
            elif ip == network.gateway:
                self.error(path, f"{ip} is the router's address", f"the router holds {network.gateway}")
            elif ip in seen:
                self.error(
                    path,
                    f"{ip} is already the address of {specs[seen[ip]]['name']}",
                    "node addresses must be unique",
                )
            seen.setdefault(ip, i)
            given[i] = ip
        missing = [i for i in range(len(specs)) if i not in given]
        try:
            free = addressing.allocate_hosts(network.cidr, [network.gateway, *given.values()], len(missing))
        except addressing.Exhausted as err:
            self.error(("network", "cidr"), f"node network: {err}", "use a larger node network")
            return None
        given.update(zip(missing, free, strict=True))
        return [given[i] for i in range(len(specs))]

    def node_pod_cidrs(self, cluster: Cluster, specs: list[dict[str, Any]]) -> list[IPv4Network | None] | None:
        result: list[IPv4Network | None] = [None] * len(specs)
        for i, n in enumerate(specs):
            if "podCIDR" not in n:
                continue
            path = ("nodes", i, "podCIDR")
            cidr = self.network(path, n["podCIDR"])
            if cidr is None:
                continue
            if not cidr.subnet_of(cluster.pod_cidr):
                self.error(
                    path,
                    f"podCIDR {cidr} is outside the cluster podCIDR {cluster.pod_cidr}",
                    "a node's podCIDR must be carved from cluster.podCIDR",
                )
            for j, other in enumerate(result):
                if other is not None and other.overlaps(cidr):
                    self.error(
                        path,
                        f"podCIDR {cidr} overlaps {other} of {specs[j]['name']}",
                        "each node needs its own podCIDR",
                    )
            if cidr.num_addresses < 4:
                self.error(path, f"podCIDR {cidr} has no room for pods", "use a /30 or larger, usually a /24")
            result[i] = cidr
        # Workers without a podCIDR get the next free one, like --allocate-node-cidrs.
        wanting = [i for i, n in enumerate(specs) if "podCIDR" not in n and n.get("role", "worker") == "worker"]
        taken = [c for c in result if c is not None]
        try:
            free = addressing.allocate_subnets(cluster.pod_cidr, cluster.node_mask_size, taken, len(wanting))
        except addressing.Exhausted as err:
            self.error(
                ("cluster", "podCIDR"),
                f"cluster podCIDR: {err}",
                "use a larger podCIDR or a longer nodeMaskSize",
            )
            return None
        for i, cidr in zip(wanting, free, strict=True):
            result[i] = cidr
        return result

    # -- pods --------------------------------------------------------------------------------
    def place_pods(self, nodes: list[Node]) -> list[Node]:
        lab = self.data["name"]
        by_name = {n.name: n for n in nodes}
        pod_nodes = [n.name for n in nodes if n.runs_pods]
        placed: dict[str, list[tuple[str, str, dict[str, str], tuple[PodPort, ...], str]]] = {n.name: [] for n in nodes}
        for w_index, w in enumerate(self.data.get("workloads", [])):
            path: Path_ = ("workloads", w_index)
            targets = w.get("nodes", pod_nodes)
            for t_index, target in enumerate(targets):
                if target not in by_name:
                    self.error(
                        (*path, "nodes", t_index),
                        f"no node named {target!r}",
                        f"nodes are: {', '.join(by_name)}",
                    )
                    return nodes
                if not by_name[target].runs_pods:
                    self.error(
                        (*path, "nodes", t_index),
                        f"node {target} has no podCIDR, so it runs no pods",
                        "give the node a podCIDR or pin the workload elsewhere",
                    )
                    return nodes
            replicas = w.get("replicas", 1)
            if replicas and not targets:
                self.error(
                    path,
                    f"workload {w['name']} has nowhere to run: no node has a podCIDR",
                    "add a worker node or give a node a podCIDR",
                )
                return nodes
            namespace = w.get("namespace", "default")
            labels = w.get("labels", {"app": w["name"]})
            ports = tuple(PodPort(p["port"], p.get("protocol", "TCP")) for p in w.get("ports", []))
            if "port" in w:
                ports = (PodPort(w["port"]), *ports)
            for index in range(replicas):
                name = addressing.pod_name(lab, namespace, w["name"], index)
                placed[targets[index % len(targets)]].append((name, namespace, labels, ports, w["name"]))
        return [self.with_pods(node, placed[node.name]) for node in nodes]

    def with_pods(self, node: Node, pods: list[tuple[str, str, dict[str, str], tuple[PodPort, ...], str]]) -> Node:
        if not pods:
            return node
        assert node.pod_cidr is not None
        index = next(i for i, n in enumerate(self.data["nodes"]) if n["name"] == node.name)
        try:
            ips = addressing.pod_ips(node.pod_cidr, len(pods))
        except addressing.Exhausted as err:
            self.error(("nodes", index), f"node {node.name}: podCIDR {err}", "use a larger podCIDR or fewer replicas")
            return node
        lab = self.data["name"]
        built = []
        for (name, namespace, labels, ports, workload), ip in zip(pods, ips, strict=True):
            ref = f"{namespace}/{name}"
            built.append(
                Pod(
                    name,
                    namespace,
                    node.name,
                    ip,
                    labels,
                    ports,
                    addressing.netns_name(lab, ref),
                    addressing.container_id(lab, ref),
                    addressing.host_veth(lab, ref),
                    workload,
                )
            )
        return Node(node.name, node.role, node.ip, node.pod_cidr, tuple(built), node.listen_ports)

    # -- services ----------------------------------------------------------------------------
    def services(self, cluster: Cluster, nodes: list[Node]) -> tuple[Service, ...]:
        specs: list[dict[str, Any]] = self.data.get("services", [])
        kubernetes_ip = next(cluster.service_cidr.hosts())
        taken = {kubernetes_ip: "default/kubernetes"}
        given: dict[int, IPv4Address] = {}
        for i, s in enumerate(specs):
            ref = f"{s.get('namespace', 'default')}/{s['name']}"
            if "clusterIP" not in s:
                continue
            path = ("services", i, "clusterIP")
            ip = self.address(path, s["clusterIP"])
            if ip is None:
                continue
            if ip not in cluster.service_cidr:
                self.error(
                    path,
                    f"clusterIP {ip} is outside serviceCIDR {cluster.service_cidr}",
                    "pick an address inside the service range, or leave clusterIP out",
                )
            elif ip in taken:
                self.error(path, f"clusterIP {ip} is already taken by {taken[ip]}", "clusterIPs must be unique")
            taken[ip] = ref
            given[i] = ip
        free = addressing.free_hosts(cluster.service_cidr, [*taken, cluster.dns_ip])
        seen_node_ports: dict[int, str] = {}
        pods = [p for n in nodes for p in n.pods]
        result = [self.kubernetes_service(kubernetes_ip, nodes)]
        for i, s in enumerate(specs):
            ref = f"{s.get('namespace', 'default')}/{s['name']}"
            if i not in given:
                try:
                    given[i] = next(free)
                except StopIteration:
                    self.error(
                        ("services", i),
                        f"service {ref}: serviceCIDR {cluster.service_cidr} is full",
                        "use a larger serviceCIDR",
                    )
                    continue
            for j, p in enumerate(s["ports"]):
                if "nodePort" in p:
                    if p["nodePort"] in seen_node_ports:
                        self.error(
                            ("services", i, "ports", j, "nodePort"),
                            f"nodePort {p['nodePort']} is already used by {seen_node_ports[p['nodePort']]}",
                            "nodePorts must be unique in the cluster",
                        )
                    seen_node_ports[p["nodePort"]] = ref
            result.append(self.service(i, s, given[i], pods))
        return tuple(result)

    def kubernetes_service(self, ip: IPv4Address, nodes: list[Node]) -> Service:
        """`default/kubernetes` always exists: the first service IP, the controllers' :6443 behind it."""
        port = ServicePort(443, APISERVER_PORT, "TCP", "https")
        endpoints = tuple(
            Endpoint(n.ip, APISERVER_PORT, None, n.name)
            for n in sorted(nodes, key=lambda n: n.ip)
            if n.role == "controller"
        )
        return Service("kubernetes", "default", "ClusterIP", ip, (port,), {}, {"https": endpoints})

    def service(self, index: int, s: dict[str, Any], ip: IPv4Address, pods: list[Pod]) -> Service:
        selector: dict[str, str] = s.get("selector", {})
        ports = tuple(
            ServicePort(
                p["port"],
                p.get("targetPort", p["port"]),
                p.get("protocol", "TCP"),
                p.get("name", ""),
                p.get("nodePort"),
            )
            for p in s["ports"]
        )
        stype = s.get("type", "ClusterIP")
        for j, p in enumerate(s["ports"]):
            if "nodePort" in p and stype != "NodePort":
                self.error(
                    ("services", index, "ports", j, "nodePort"),
                    f"nodePort given on a {stype} service",
                    "set type: NodePort",
                )
        if len(ports) > 1 and any(not p.name for p in ports):
            self.error(
                ("services", index, "ports"),
                "a service with several ports must name each port",
                "add name: to every port",
            )
        matching = [p for p in pods if selector and all(p.labels.get(k) == v for k, v in selector.items())]
        if selector and not matching:
            self.warn(
                ("services", index, "selector"),
                f"selector {selector} matches no pod",
                "the service will have no endpoints and will reject connections",
            )
        endpoints = {
            (p.name or str(p.port)): tuple(
                Endpoint(pod.ip, p.target_port, pod.node, pod.name) for pod in sorted(matching, key=lambda pod: pod.ip)
            )
            for p in ports
        }
        return Service(
            s["name"],
            s.get("namespace", "default"),
            stype,
            ip,
            ports,
            selector,
            endpoints,
            s.get("sessionAffinity") == "ClientIP",
            s.get("sessionAffinityTimeout", 10800),
        )


def build_model(spec: Spec) -> Resolved:
    resolver = _Resolver(spec)
    lab = resolver.resolve()
    errors = [p for p in resolver.problems if not p.warning]
    if errors or lab is None:
        raise SpecError(resolver.problems)
    return Resolved(lab, [p for p in resolver.problems if p.warning])
