"""Spec → Model: apply defaults, check what the schema cannot say, resolve every address.

Every problem found is collected with its location so that `validate` prints them all at
once; `build_model` raises SpecError when any is an error (warnings are kept on the result).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network, ip_address, ip_network
from typing import Any

from labbuilder.errors import LabError, Problem, SpecError
from labbuilder.spec import addressing, defaults
from labbuilder.spec.checks import check_from_spec, validate_check
from labbuilder.spec.load import Path_, Spec, capped, lab_schema, matches
from labbuilder.spec.model import (
    ROUTER,
    Check,
    Cluster,
    Cni,
    Endpoint,
    HostKernel,
    Lab,
    LoadBalancerRange,
    Node,
    NodeNetwork,
    Pod,
    PodApp,
    PodPort,
    Service,
    ServicePort,
)

APISERVER_PORT = 6443
NODE_PORT_RANGE = range(30000, 32768)  # kube-apiserver's --service-node-port-range default
RESERVED_NODE_NAMES = {ROUTER: "the lab's router is named <lab>-router already"}


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
    def __init__(self, spec: Spec, kernel: HostKernel):
        self.spec = spec
        self.data = spec.data
        self.kernel = kernel
        self.problems: list[Problem] = []

    # -- helpers -------------------------------------------------------------------------
    def error(self, path: Path_, message: str, hint: str = "") -> None:
        self.problems.append(self.spec.problem(path, message, hint))

    def warn(self, path: Path_, message: str, hint: str = "") -> None:
        self.problems.append(self.spec.problem(path, message, hint, warning=True))

    def section(self, name: str) -> dict[str, Any]:
        return defaults.of(name, self.data.get(name, {}))

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
        self.check_name()
        cni_cfg = self.section("cni")
        network = self.node_network(self.section("network"))
        cluster = self.cluster(self.section("cluster"))
        if network is None or cluster is None:
            return None
        self.check_disjoint(
            {
                ("network", "cidr"): network.cidr,
                ("cluster", "podCIDR"): cluster.pod_cidr,
                ("cluster", "serviceCIDR"): cluster.service_cidr,
            }
        )
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
        load_balancer = self.load_balancer(network, cluster, nodes)
        style = self.section("kubeProxy")["style"]
        services = self.services(cluster, nodes, load_balancer, style)
        lab = Lab(self.data["name"], network, cluster, cni, tuple(nodes), services, (), style, load_balancer)
        return replace(lab, checks=self.checks(lab, self.data.get("checks", []), ("checks",)))

    def load_balancer(self, network: NodeNetwork, cluster: Cluster, nodes: list[Node]) -> LoadBalancerRange | None:
        """`loadBalancer.range`: addresses for no one but LoadBalancer services (it may sit inside the
        node network, as a cloud's do, but never on a node, the router, or the pod and service ranges)."""
        if "loadBalancer" not in self.data:
            return None
        path: Path_ = ("loadBalancer", "range")
        cidr = self.network(path, self.data["loadBalancer"]["range"])
        if cidr is None:
            return None
        for other, what in ((cluster.pod_cidr, "cluster.podCIDR"), (cluster.service_cidr, "cluster.serviceCIDR")):
            if cidr.overlaps(other):
                self.error(
                    path, f"{cidr} overlaps {other} ({what})", "pick addresses outside the pod and service ranges"
                )
                return None
        taken = {network.gateway: "the router", **{n.ip: f"node {n.name}" for n in nodes}}
        for ip, who in taken.items():
            if ip in cidr:
                self.error(path, f"{cidr} holds {ip}, the address of {who}", "pick addresses no node uses")
                return None
        return LoadBalancerRange(cidr)

    def check_name(self) -> None:
        """The file's name passed the schema; one given on the command line (`up --name`) has not."""
        rule = lab_schema()["properties"]["name"]
        name = self.data["name"]
        if not isinstance(name, str) or not matches(rule["pattern"], name):
            self.error(("name",), f"lab name {name!r} is not valid", rule["description"])

    def cluster(self, cfg: dict[str, Any]) -> Cluster | None:
        pod_net = self.network(("cluster", "podCIDR"), cfg["podCIDR"])
        svc_net = self.network(("cluster", "serviceCIDR"), cfg["serviceCIDR"])
        mask = cfg["nodeMaskSize"]
        if pod_net is not None and mask < pod_net.prefixlen:
            self.error(
                ("cluster", "nodeMaskSize"),
                f"nodeMaskSize /{mask} is larger than podCIDR {pod_net}",
                f"use a prefix of at least {pod_net.prefixlen}",
            )
            return None
        dns_ip = self.dns_ip(cfg, svc_net) if svc_net is not None else None
        if pod_net is None or svc_net is None or dns_ip is None:
            return None
        return Cluster(pod_net, mask, svc_net, dns_ip, cfg["domain"], cfg["dns"], cfg["version"])

    def dns_ip(self, cfg: dict[str, Any], svc: IPv4Network) -> IPv4Address | None:
        """kubeadm's: default/kubernetes takes the first address of serviceCIDR, the DNS the tenth or dnsIP."""
        if "dnsIP" not in cfg:
            if svc.num_addresses <= defaults.DNS_INDEX + 1:  # the tenth must be a host, not the broadcast
                self.error(
                    ("cluster", "serviceCIDR"),
                    f"serviceCIDR {svc} has no tenth address for the cluster DNS",
                    "use a /28 or larger, or set cluster.dnsIP",
                )
                return None
            return defaults.dns_ip(svc)
        if svc.prefixlen > 30:
            self.error(
                ("cluster", "serviceCIDR"),
                f"serviceCIDR {svc} has no room for the kubernetes and DNS services",
                "use a /30 or larger",
            )
            return None
        path = ("cluster", "dnsIP")
        ip = self.address(path, cfg["dnsIP"])
        if ip is None:
            return None
        example = defaults.dns_ip(svc) if svc.num_addresses > defaults.DNS_INDEX + 1 else svc.network_address + 2
        if ip not in svc or ip in (svc.network_address, svc.broadcast_address):
            self.error(path, f"dnsIP {ip} is not a host address of serviceCIDR {svc}", f"such as {example}")
        elif ip == defaults.kubernetes_ip(svc):
            self.error(path, f"dnsIP {ip} is the address of the kubernetes service", f"such as {example}")
        else:
            return ip
        return None

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

    def node_network(self, cfg: dict[str, Any]) -> NodeNetwork | None:
        cidr = self.network(("network", "cidr"), cfg["cidr"])
        if cidr is None:
            return None
        if cidr.num_addresses < 4:
            self.error(("network", "cidr"), f"{cidr} is too small for a router and nodes", "use a /29 or larger")
            return None
        gateway = defaults.gateway(cidr)
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
        specs = [defaults.of("nodes.*", n) for n in self.data["nodes"]]
        named = self.node_names(specs)
        ips = self.node_ips(network, specs)
        cidrs = self.node_pod_cidrs(cluster, specs)
        if not named or ips is None or cidrs is None:
            return None
        return [
            Node(
                n["name"],
                n["role"],
                ip,
                cidr,
                listen_ports=(APISERVER_PORT,) if n["role"] == "controller" else (),
            )
            for n, ip, cidr in zip(specs, ips, cidrs, strict=True)
        ]

    def node_names(self, specs: list[dict[str, Any]]) -> bool:
        """Names are container names (<lab>-<name>) and references: unique, and never the router's."""
        first: dict[str, int] = {}
        counts = Counter(n["name"] for n in specs)
        ok = True
        for i, n in enumerate(specs):
            name = n["name"]
            if name in RESERVED_NODE_NAMES:
                self.error(("nodes", i, "name"), f"node name {name!r} is reserved", RESERVED_NODE_NAMES[name])
                ok = False
            elif name in first:
                self.error(
                    ("nodes", i, "name"),
                    f"node name {name!r} is used {counts[name]} times",
                    "node names must be unique",
                )
                ok = False
            first.setdefault(name, i)
        return ok

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
        given: list[tuple[int, IPv4Network]] = []
        ok = True
        for i, n in enumerate(specs):
            if "podCIDR" not in n:
                continue
            path = ("nodes", i, "podCIDR")
            cidr = self.network(path, n["podCIDR"])
            if cidr is None:
                ok = False
            elif not cidr.subnet_of(cluster.pod_cidr):
                self.error(
                    path,
                    f"podCIDR {cidr} is outside the cluster podCIDR {cluster.pod_cidr}",
                    "a node's podCIDR must be carved from cluster.podCIDR",
                )
                ok = False
            elif cidr.num_addresses < 4:
                self.error(path, f"podCIDR {cidr} has no room for pods", "use a /30 or larger, usually a /24")
                ok = False
            else:
                given.append((i, cidr))
                result[i] = cidr
        for later, earlier in addressing.overlapping([cidr for _, cidr in given]):
            (i, cidr), (j, other) = given[later], given[earlier]
            self.error(
                ("nodes", i, "podCIDR"),
                f"podCIDR {cidr} overlaps {other} of {specs[j]['name']}",
                "each node needs its own podCIDR",
            )
            ok = False
        if not ok:
            return None
        # Workers without a podCIDR get the next free one, like --allocate-node-cidrs.
        wanting = [i for i, n in enumerate(specs) if "podCIDR" not in n and n["role"] == "worker"]
        try:
            free = addressing.allocate_subnets(
                cluster.pod_cidr, cluster.node_mask_size, [c for _, c in given], len(wanting)
            )
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
        seen: set[tuple[str, str]] = set()
        for w_index, given in enumerate(self.data.get("workloads", [])):
            path: Path_ = ("workloads", w_index)
            w = defaults.of("workloads.*", given)
            if (w["namespace"], w["name"]) in seen:
                self.error((*path, "name"), f"workload {w['namespace']}/{w['name']} is defined twice", "rename one")
                continue
            seen.add((w["namespace"], w["name"]))
            targets = w.get("nodes", pod_nodes)
            if not self.targets_ok(path, targets, by_name):
                return nodes
            replicas = w["replicas"]
            if replicas and not targets:
                self.error(
                    path,
                    f"workload {w['name']} has nowhere to run: no node has a podCIDR",
                    "add a worker node or give a node a podCIDR",
                )
                return nodes
            ports = self.pod_ports(path, w)
            if "port" in w:
                ports = (PodPort(w["port"], defaults.DEFAULTS["workloads.*.ports.*"]["protocol"]), *ports)
            labels = w.get("labels", defaults.labels(w["name"]))
            template = _Placement(w["name"], w["namespace"], labels, ports)
            for index in range(replicas):
                placed[targets[index % len(targets)]].append(replace(template, index=index))
        if cluster.dns and pod_nodes:
            # The cluster DNS pod goes last on the first pod node, so user pods keep their addresses.
            placed[pod_nodes[0]].append(DNS_POD)
        rows = {n["name"]: i for i, n in enumerate(self.data["nodes"])}
        return [self.with_pods(node, rows[node.name], placed[node.name]) for node in nodes]

    def pod_ports(self, path: Path_, w: dict[str, Any]) -> tuple[PodPort, ...]:
        """A workload's `ports:`, names unique in the pod (as the API server wants of a container)."""
        ports = []
        names: set[str] = set()
        for j, given in enumerate(w.get("ports", [])):
            p = defaults.of("workloads.*.ports.*", given)
            name = p.get("name", "")
            if name and name in names:
                self.error((*path, "ports", j, "name"), f"port name {name!r} is used twice", "port names are unique")
            names.add(name)
            self.check_protocol((*path, "ports", j, "protocol"), p["protocol"])
            ports.append(PodPort(p["port"], p["protocol"], name))
        return tuple(ports)

    def check_protocol(self, path: Path_, protocol: str) -> None:
        """SCTP needs the host kernel's sctp module: every lab shares the host's kernel."""
        if protocol == "SCTP" and not self.kernel.sctp:
            self.error(
                path,
                "protocol SCTP needs the host kernel's sctp module, and this host has none (/proc/net/sctp is absent)",
                "load it on the host (modprobe sctp) or use TCP or UDP",
            )

    def targets_ok(self, path: Path_, targets: list[str], by_name: dict[str, Node]) -> bool:
        for t_index, target in enumerate(targets):
            if target not in by_name:
                self.error((*path, "nodes", t_index), f"no node named {target!r}", f"nodes are: {_few(by_name)}")
                return False
            if not by_name[target].runs_pods:
                self.error(
                    (*path, "nodes", t_index),
                    f"node {target} has no podCIDR, so it runs no pods",
                    "give the node a podCIDR or pin the workload elsewhere",
                )
                return False
        return True

    def with_pods(self, node: Node, index: int, pods: list[_Placement]) -> Node:
        if not pods:
            return node
        assert node.pod_cidr is not None
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
    def services(
        self, cluster: Cluster, nodes: list[Node], lb: LoadBalancerRange | None, style: str
    ) -> tuple[Service, ...]:
        """Built-in services first (kubernetes, kube-dns), then the file's, clusterIPs checked and allocated."""
        entries = self.service_entries(cluster)
        taken: dict[IPv4Address, str] = {}
        given: dict[int, IPv4Address | None] = {}
        for i, (path, s) in enumerate(entries):
            if "clusterIP" not in s:
                continue
            if s["clusterIP"] == "None":  # headless: no address, no kube-proxy rules, DNS only
                given[i] = None
                if s["type"] != "ClusterIP":
                    self.error(
                        (*path, "clusterIP"),
                        f"clusterIP may not be None for a {s['type']} service",
                        "use type: ClusterIP for a headless service",
                    )
                continue
            ip = self.address((*path, "clusterIP"), s["clusterIP"])
            if ip is None:
                continue
            ref = f"{s['namespace']}/{s['name']}"
            if ip not in cluster.service_cidr:
                self.error(
                    (*path, "clusterIP"),
                    f"clusterIP {ip} is outside serviceCIDR {cluster.service_cidr}",
                    "pick an address inside the service range, or leave clusterIP out",
                )
            elif ip in (cluster.service_cidr.network_address, cluster.service_cidr.broadcast_address):
                self.error(
                    (*path, "clusterIP"),
                    f"clusterIP {ip} is not a host address of serviceCIDR {cluster.service_cidr}",
                    "the first and last addresses of a range are not for hosts",
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
            ref = f"{s['namespace']}/{s['name']}"
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
                        # a port name: the apiservers name no port, so it has no endpoints
                        (p.name or str(p.port)): tuple(
                            Endpoint(n.ip, p.target_port, None, n.name)
                            for n in controllers
                            if isinstance(p.target_port, int)
                        )
                        for p in service.ports
                    },
                )
            self.check_external(path, s, service, cluster, nodes, style)
            result.append(service)
        result = self.allocate_node_ports(result, set(seen_node_ports))
        return self.allocate_load_balancers(entries, result, lb, cluster, nodes)

    def check_external(
        self, path: Path_, s: dict[str, Any], svc: Service, cluster: Cluster, nodes: list[Node], style: str
    ) -> None:
        """What the API server checks of externalIPs and the traffic policies, and what 2018 lacks."""
        for j, ip in enumerate(svc.external_ips):
            where: Path_ = (*path, "externalIPs", j)
            holders = {cluster.pod_cidr: "cluster.podCIDR", cluster.service_cidr: "cluster.serviceCIDR"}
            inside = [what for net, what in holders.items() if ip in net]
            node = next((n.name for n in nodes if n.ip == ip), None)
            if inside:
                self.error(where, f"externalIP {ip} is inside {inside[0]}", "an external IP is outside the cluster")
            elif node is not None:
                self.error(where, f"externalIP {ip} is the address of node {node}", "node ports already answer there")
        externally = svc.type != "ClusterIP" or svc.external_ips
        if svc.external_traffic_policy == "Local" and not externally:
            self.error(
                (*path, "externalTrafficPolicy"),
                "externalTrafficPolicy may only be set for externally-accessible services",
                "use type: NodePort or LoadBalancer, or give externalIPs",
            )
        if svc.load_balancer_source_ranges and svc.type != "LoadBalancer":
            self.error(
                (*path, "loadBalancerSourceRanges"),
                f"loadBalancerSourceRanges given on a {svc.type} service",
                "set type: LoadBalancer",
            )
        if style == "2018":
            modern: list[str] = [
                key for key in ("externalIPs", "loadBalancerIP", "loadBalancerSourceRanges") if key in s
            ]
            modern += [key for key in ("externalTrafficPolicy", "internalTrafficPolicy") if s[key] == "Local"]
            modern += ["type"] if s["type"] == "LoadBalancer" else []
            for key in modern:
                self.error(
                    (*path, key),
                    f"{key if isinstance(s[key], list) else f'{key}: {s[key]}'} is rendered in current kube-proxy's"
                    " shapes only",
                    "use kubeProxy.style: current",
                )

    def allocate_node_ports(self, services: list[Service], used: set[int]) -> list[Service]:
        """NodePort and LoadBalancer ports without a nodePort get the lowest free one, as do
        LoadBalancer services with externalTrafficPolicy Local their healthCheckNodePort
        (kube-apiserver picks at random; the lowest keeps a lab the same on every `up`)."""
        free = (port for port in NODE_PORT_RANGE if port not in used)
        out = []
        for svc in services:
            if svc.type != "ClusterIP":
                ports = tuple(p if p.node_port else replace(p, node_port=next(free, None)) for p in svc.ports)
                svc = replace(svc, ports=ports)
            if svc.type == "LoadBalancer" and svc.external_traffic_policy == "Local":
                svc = replace(svc, health_check_node_port=next(free, None))
            out.append(svc)
        return out

    def allocate_load_balancers(
        self,
        entries: list[tuple[Path_, dict[str, Any]]],
        services: list[Service],
        lb: LoadBalancerRange | None,
        cluster: Cluster,
        nodes: list[Node],
    ) -> tuple[Service, ...]:
        """LoadBalancer services take `loadBalancerIP`, else the next free address of the lab's range
        in file order, as a cloud's load-balancer controller hands them out."""
        by_ref = {f"{s['namespace']}/{s['name']}": (path, s) for path, s in entries}
        wanted: dict[str, IPv4Address] = {}
        owner: dict[IPv4Address, str] = {}
        for svc in services:
            path, s = by_ref[svc.ref]
            if "loadBalancerIP" not in s:
                continue
            where: Path_ = (*path, "loadBalancerIP")
            if svc.type != "LoadBalancer":
                self.error(where, f"loadBalancerIP given on a {svc.type} service", "set type: LoadBalancer")
                continue
            ip = self.address(where, s["loadBalancerIP"])
            if ip is None:
                continue
            if lb is not None and ip not in lb.range:
                self.error(where, f"loadBalancerIP {ip} is outside loadBalancer.range {lb.range}", "pick one inside it")
            elif ip in owner:
                self.error(where, f"loadBalancerIP {ip} is already taken by {owner[ip]}", "each service needs its own")
            elif ip in cluster.pod_cidr or ip in cluster.service_cidr or any(n.ip == ip for n in nodes):
                self.error(where, f"loadBalancerIP {ip} is an address of the cluster", "use loadBalancer.range")
            wanted[svc.ref] = ip
            owner.setdefault(ip, svc.ref)
        pool = (ip for ip in (lb.range.hosts() if lb else ()) if ip not in owner)
        out = []
        for svc in services:
            if svc.type != "LoadBalancer":
                out.append(svc)
                continue
            ip = wanted.get(svc.ref) or next(pool, None)
            if ip is None:
                path, _ = by_ref[svc.ref]
                why = "no loadBalancer.range" if lb is None else f"loadBalancer.range {lb.range} is used up"
                self.warn((*path, "type"), f"{why}: {svc.ref} keeps EXTERNAL-IP <pending>", "add addresses")
                out.append(svc)
                continue
            out.append(replace(svc, load_balancer_ips=(ip,)))
        return tuple(out)

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
                    "clusterIP": str(defaults.kubernetes_ip(cluster.service_cidr)),
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
        entries = [(path, defaults.of("services.*", b)) for path, b in builtins]
        by_ref = {f"{b['namespace']}/{b['name']}": n for n, (_, b) in enumerate(entries)}
        from_file: set[str] = set()
        for i, given in enumerate(self.data.get("services", [])):
            s = defaults.of("services.*", given)
            ref = f"{s['namespace']}/{s['name']}"
            if ref in from_file:
                self.error(("services", i, "name"), f"service {ref} is defined twice", "rename one")
                continue
            from_file.add(ref)
            if ref in by_ref:
                base = entries[by_ref[ref]][1]
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

    def service(self, path: Path_, s: dict[str, Any], ip: IPv4Address | None, pods: list[Pod]) -> Service:
        selector: dict[str, str] = s.get("selector", {})
        given = [defaults.of("services.*.ports.*", p) for p in s["ports"]]
        ports = tuple(
            ServicePort(p["port"], p.get("targetPort", p["port"]), p["protocol"], p.get("name", ""), p.get("nodePort"))
            for p in given
        )
        stype = s["type"]
        for j, p in enumerate(given):
            self.check_protocol((*path, "ports", j, "protocol"), p["protocol"])
            if "nodePort" in p and stype == "ClusterIP":
                self.error(
                    (*path, "ports", j, "nodePort"), f"nodePort given on a {stype} service", "set type: NodePort"
                )
        self.check_ports(path, ports)
        matching = sorted(
            (p for p in pods if selector and all(p.labels.get(k) == v for k, v in selector.items())),
            key=lambda pod: pod.ip,
        )
        if selector and not matching:
            self.warn(
                (*path, "selector"),
                f"selector {selector} matches no pod",
                "the service will have no endpoints and will reject connections",
            )
        endpoints = {}
        for j, port_ in enumerate(ports):
            found = tuple(
                Endpoint(pod.ip, port, pod.node, pod.name)
                for pod in matching
                if (port := _target_port(pod, port_)) is not None
            )
            if matching and not found:
                self.warn(
                    (*path, "ports", j, "targetPort"),
                    f"no selected pod has a {port_.protocol} port named {port_.target_port!r}",
                    "name the port in the workload's ports: [{name: ..., port: ...}]",
                )
            endpoints[port_.name or str(port_.port)] = found
        return Service(
            s["name"],
            s["namespace"],
            stype,
            ip,
            ports,
            selector,
            endpoints,
            s["sessionAffinity"] == "ClientIP",
            s["sessionAffinityTimeout"],
            external_traffic_policy=s["externalTrafficPolicy"],
            internal_traffic_policy=s["internalTrafficPolicy"],
            external_ips=tuple(
                a for j, t in enumerate(s.get("externalIPs", [])) if (a := self.address((*path, "externalIPs", j), t))
            ),
            load_balancer_source_ranges=tuple(
                n
                for j, t in enumerate(s.get("loadBalancerSourceRanges", []))
                if (n := self.network((*path, "loadBalancerSourceRanges", j), t))
            ),
        )

    def check_ports(self, path: Path_, ports: tuple[ServicePort, ...]) -> None:
        """As the API server: several ports are each named, names and port/protocol pairs are unique."""
        if len(ports) > 1 and any(not p.name for p in ports):
            self.error((*path, "ports"), "a service with several ports must name each port", "add name: to every port")
            return
        names: set[str] = set()
        pairs: set[tuple[int, str]] = set()
        for j, p in enumerate(ports):
            if p.name in names:
                self.error((*path, "ports", j, "name"), f"port name {p.name!r} is used twice", "port names are unique")
            elif (p.port, p.protocol) in pairs:
                self.error((*path, "ports", j, "port"), f"port {p.port}/{p.protocol} is listed twice")
            names.add(p.name)
            pairs.add((p.port, p.protocol))


def _target_port(pod: Pod, port: ServicePort) -> int | None:
    """The pod's port a service port targets: its number, or the pod's port of that name and
    protocol (kube's FindPort); None when the pod has no such port, so it is no endpoint of it."""
    if isinstance(port.target_port, int):
        return port.target_port
    return next((p.port for p in pod.ports if p.name == port.target_port and p.protocol == port.protocol), None)


def _few(names: Iterable[str], limit: int = 10) -> str:
    """A list for a hint, kept short when a lab has thousands of nodes."""
    shown = list(itertools.islice(names, limit + 1))
    return ", ".join(shown[:limit]) + (", …" if len(shown) > limit else "")


def build_model(spec: Spec, kernel: HostKernel | None = None) -> Resolved:
    """`kernel`: the host's facts (engine.kernel reads them); None assumes everything is there."""
    resolver = _Resolver(spec, kernel or HostKernel())
    lab = resolver.resolve()
    errors = [p for p in resolver.problems if not p.warning]
    if errors or lab is None:
        raise SpecError(capped(resolver.problems))
    return Resolved(lab, [p for p in resolver.problems if p.warning])
