"""Spec → Model: apply defaults, check what the schema cannot say, resolve every address.

Every problem found is collected with its location so that `validate` prints them all at
once; `build_model` raises SpecError when any is an error (warnings are kept on the result).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network, ip_address, ip_network
from typing import Any

from labbuilder.errors import LabError, Problem, SpecError
from labbuilder.spec import addressing
from labbuilder.spec.checks import check_from_spec, validate_check
from labbuilder.spec.load import Path_, Spec
from labbuilder.spec.model import (
    Check,
    Cluster,
    Cni,
    Endpoint,
    Lab,
    Node,
    NodeNetwork,
    Pod,
    PodApp,
    PodPort,
    Service,
    ServicePort,
)

APISERVER_PORT = 6443
DEFAULTS: dict[str, Any] = {
    "network": {"cidr": "10.240.0.0/24"},
    "cluster": {
        "podCIDR": "10.200.0.0/16",
        "nodeMaskSize": 24,
        "serviceCIDR": "10.32.0.0/24",
        "dnsIP": "10.32.0.10",
        "domain": "cluster.local",
        "dns": True,
    },
    "cni": {"mode": "bridge", "bridge": "cnio0", "ipMasq": True, "routes": "router", "mtu": 1500, "hairpinMode": True},
}


@dataclass(frozen=True)
class _Placement:
    """A pod decided on but not yet addressed: which workload, which replica."""

    workload: str
    namespace: str
    labels: dict[str, str]
    ports: tuple[PodPort, ...]
    app: PodApp = "server"
    index: int = 0


DNS_LABELS = {"k8s-app": "kube-dns"}
DNS_POD = _Placement(
    "coredns", "kube-system", DNS_LABELS, (PodPort(53, "UDP"), PodPort(53, "TCP"), PodPort(9153, "TCP")), app="dns"
)


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
        cluster = Cluster(pod_net, mask, svc_net, dns_ip, cluster_cfg["domain"], cluster_cfg["dns"])
        cni = Cni(
            mode=cni_cfg["mode"],
            bridge=cni_cfg["bridge"],
            ip_masq=cni_cfg["ipMasq"],
            routes=cni_cfg["routes"],
            mtu=cni_cfg["mtu"],
            hairpin=cni_cfg["hairpinMode"],
        )
        nodes = self.nodes(network, cluster)
        if nodes is None:
            return None
        nodes = self.place_pods(nodes, cluster)
        services = self.services(cluster, nodes)
        style = self.data.get("kubeProxy", {}).get("style", "current")
        lab = Lab(self.data["name"], network, cluster, cni, tuple(nodes), services, (), style)
        return replace(lab, checks=self.checks(lab, self.data.get("checks", []), ("checks",)))

    def checks(self, lab: Lab, items: list[dict[str, Any]], path: Path_) -> tuple[Check, ...]:
        """Checks whose names (pods, nodes, services) all exist in the lab."""
        result = []
        for i, item in enumerate(items):
            check = check_from_spec(item, i)
            try:
                validate_check(lab, check)
            except LabError as err:
                self.error((*path, i), f"check {check.name!r}: {err.message}", err.hint)
                continue
            result.append(check)
        return tuple(result)

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
    def place_pods(self, nodes: list[Node], cluster: Cluster) -> list[Node]:
        by_name = {n.name: n for n in nodes}
        pod_nodes = [n.name for n in nodes if n.runs_pods]
        placed: dict[str, list[_Placement]] = {n.name: [] for n in nodes}
        for w_index, w in enumerate(self.data.get("workloads", [])):
            path: Path_ = ("workloads", w_index)
            targets = w.get("nodes", pod_nodes)
            if not self.targets_ok(path, targets, by_name):
                return nodes
            replicas = w.get("replicas", 1)
            if replicas and not targets:
                self.error(
                    path,
                    f"workload {w['name']} has nowhere to run: no node has a podCIDR",
                    "add a worker node or give a node a podCIDR",
                )
                return nodes
            ports = tuple(PodPort(p["port"], p.get("protocol", "TCP")) for p in w.get("ports", []))
            if "port" in w:
                ports = (PodPort(w["port"]), *ports)
            template = _Placement(w["name"], w.get("namespace", "default"), w.get("labels", {"app": w["name"]}), ports)
            for index in range(replicas):
                placed[targets[index % len(targets)]].append(replace(template, index=index))
        if cluster.dns and pod_nodes:
            # The cluster DNS pod goes last on the first pod node, so user pods keep their addresses.
            placed[pod_nodes[0]].append(DNS_POD)
        return [self.with_pods(node, placed[node.name]) for node in nodes]

    def targets_ok(self, path: Path_, targets: list[str], by_name: dict[str, Node]) -> bool:
        for t_index, target in enumerate(targets):
            if target not in by_name:
                self.error((*path, "nodes", t_index), f"no node named {target!r}", f"nodes are: {', '.join(by_name)}")
                return False
            if not by_name[target].runs_pods:
                self.error(
                    (*path, "nodes", t_index),
                    f"node {target} has no podCIDR, so it runs no pods",
                    "give the node a podCIDR or pin the workload elsewhere",
                )
                return False
        return True

    def with_pods(self, node: Node, pods: list[_Placement]) -> Node:
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
        for p, ip in zip(pods, ips, strict=True):
            name = addressing.pod_name(lab, p.namespace, p.workload, p.index)
            ref = f"{p.namespace}/{name}"
            built.append(
                Pod(
                    name,
                    p.namespace,
                    node.name,
                    ip,
                    p.labels,
                    p.ports,
                    addressing.netns_name(lab, ref),
                    addressing.container_id(lab, ref),
                    addressing.host_veth(lab, ref),
                    p.workload,
                    p.app,
                )
            )
        return replace(node, pods=tuple(built))

    # -- services ----------------------------------------------------------------------------
    def services(self, cluster: Cluster, nodes: list[Node]) -> tuple[Service, ...]:
        """Built-in services first (kubernetes, kube-dns), then the file's, clusterIPs checked and allocated."""
        entries = self.service_entries(cluster)
        taken: dict[IPv4Address, str] = {}
        given: dict[int, IPv4Address] = {}
        for i, (path, s) in enumerate(entries):
            if "clusterIP" not in s:
                continue
            ip = self.address((*path, "clusterIP"), s["clusterIP"])
            if ip is None:
                continue
            ref = f"{s.get('namespace', 'default')}/{s['name']}"
            if ip not in cluster.service_cidr:
                self.error(
                    (*path, "clusterIP"),
                    f"clusterIP {ip} is outside serviceCIDR {cluster.service_cidr}",
                    "pick an address inside the service range, or leave clusterIP out",
                )
            elif ip in taken:
                self.error(
                    (*path, "clusterIP"), f"clusterIP {ip} is already taken by {taken[ip]}", "clusterIPs must be unique"
                )
            taken.setdefault(ip, ref)
            given[i] = ip
        free = addressing.free_hosts(cluster.service_cidr, [*taken, cluster.dns_ip])
        seen_node_ports: dict[int, str] = {}
        pods = [p for n in nodes for p in n.pods]
        controllers = [n for n in sorted(nodes, key=lambda n: n.ip) if n.role == "controller"]
        result = []
        for i, (path, s) in enumerate(entries):
            ref = f"{s.get('namespace', 'default')}/{s['name']}"
            if i not in given:
                ip = next(free, None)
                if ip is None:
                    self.error(
                        path, f"service {ref}: serviceCIDR {cluster.service_cidr} is full", "use a larger serviceCIDR"
                    )
                    continue
                given[i] = ip
            for j, p in enumerate(s["ports"]):
                if "nodePort" in p:
                    if p["nodePort"] in seen_node_ports:
                        self.error(
                            (*path, "ports", j, "nodePort"),
                            f"nodePort {p['nodePort']} is already used by {seen_node_ports[p['nodePort']]}",
                            "nodePorts must be unique in the cluster",
                        )
                    seen_node_ports[p["nodePort"]] = ref
            service = self.service(path, s, given[i], pods)
            if ref == "default/kubernetes" and not s.get("selector"):
                # No selector: its endpoints are the apiservers, the controllers' :6443 (seed 003).
                service = replace(
                    service,
                    endpoints={
                        (p.name or str(p.port)): tuple(Endpoint(n.ip, p.target_port, None, n.name) for n in controllers)
                        for p in service.ports
                    },
                )
            result.append(service)
        return tuple(result)

    def service_entries(self, cluster: Cluster) -> list[tuple[Path_, dict[str, Any]]]:
        """The file's services, with `default/kubernetes` and `kube-system/kube-dns` always there.

        A file entry with a built-in's name adjusts it (session affinity, ports) in place.
        """
        builtins: list[tuple[Path_, dict[str, Any]]] = [
            (
                ("services",),
                {
                    "name": "kubernetes",
                    "namespace": "default",
                    "clusterIP": str(next(cluster.service_cidr.hosts())),
                    "ports": [{"name": "https", "port": 443, "targetPort": APISERVER_PORT}],
                },
            )
        ]
        if cluster.dns:
            builtins.append(
                (
                    ("cluster", "dnsIP"),
                    {
                        "name": "kube-dns",
                        "namespace": "kube-system",
                        "clusterIP": str(cluster.dns_ip),
                        "selector": dict(DNS_LABELS),
                        "ports": [
                            {"name": "dns", "port": 53, "protocol": "UDP"},
                            {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                            {"name": "metrics", "port": 9153, "protocol": "TCP"},
                        ],
                    },
                )
            )
        by_ref = {f"{b['namespace']}/{b['name']}": n for n, (_, b) in enumerate(builtins)}
        entries = list(builtins)
        for i, s in enumerate(self.data.get("services", [])):
            ref = f"{s.get('namespace', 'default')}/{s['name']}"
            if ref in by_ref:
                base = builtins[by_ref[ref]][1]
                if "clusterIP" in s and s["clusterIP"] != base["clusterIP"]:
                    self.error(
                        ("services", i, "clusterIP"),
                        f"{ref} always has clusterIP {base['clusterIP']}",
                        "leave clusterIP out for this service",
                    )
                entries[by_ref[ref]] = (("services", i), {**base, **s, "clusterIP": base["clusterIP"]})
            else:
                entries.append((("services", i), s))
        return entries

    def service(self, path: Path_, s: dict[str, Any], ip: IPv4Address, pods: list[Pod]) -> Service:
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
                    (*path, "ports", j, "nodePort"), f"nodePort given on a {stype} service", "set type: NodePort"
                )
        if len(ports) > 1 and any(not p.name for p in ports):
            self.error((*path, "ports"), "a service with several ports must name each port", "add name: to every port")
        matching = [p for p in pods if selector and all(p.labels.get(k) == v for k, v in selector.items())]
        if selector and not matching:
            self.warn(
                (*path, "selector"),
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
