"""Read a running lab back, the way kubectl reads a cluster: nodes, pods, services, endpoints.

Nothing here trusts the spec for what the kernel says: node addresses come from `eth0` in each
node, pod addresses and readiness from the pod's netns and the pidfiles of its processes,
services and endpoints from kube-proxy's rules in a node's `iptables-save`. The model (the
spec copy the router holds) only supplies names: which netns is which pod, which process is
which container, which endpoint address is which pod.

The reading is a pipeline, each stage testable on captured text:
- observe.snapshot: one `docker exec` per node prints everything, one parse;
- compile.kubeproxy.parse: kube-proxy's rules back into service ports, beside their generator;
- here, pure: `node_state`, `pod_state`, `service_views` (the model names what was read);
- here, the effects: `open_lab`, `read_nodes`, `read_pods`, `read_services` (docker calls, in parallel).
kubectl's columns and objects are drawn from these states by present.kubectl.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Interface

from labbuilder.compile.kubelet import pod_containers
from labbuilder.compile.kubeproxy import ServicePortRules, parse_service_rules
from labbuilder.compile.netfilter import parse_save
from labbuilder.compile.ops import ROUTER
from labbuilder.engine.runtime import ContainerInfo, LabHandle, in_threads
from labbuilder.errors import LabError
from labbuilder.observe.snapshot import NodeSnapshot, ProcessState, parse_snapshot, snapshot_argv
from labbuilder.spec.model import Lab, Node, Pod, Service


# --------------------------------------------------------------------------------------------
# Nodes and pods: state derived from a snapshot and the model's names.
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NodeState:
    node: Node
    container_state: str  # docker's: running, exited, ... ("missing" when there is no container)
    started: float | None  # container start, epoch seconds
    ip: IPv4Interface | None  # read back from eth0
    kernel: str = ""
    os_image: str = ""
    problems: tuple[str, ...] = ()

    @property
    def ready(self) -> bool:
        return not self.problems

    @property
    def status(self) -> str:
        return "Ready" if self.ready else "NotReady"


def node_state(node: Node, container_state: str, started: float | None, snap: NodeSnapshot | None) -> NodeState:
    if container_state != "running" or snap is None:
        return NodeState(node, container_state, started, None, problems=(f"container is {container_state}",))
    ip = snap.eth0[0] if snap.eth0 else None
    problems = () if ip else ("no IPv4 address on eth0",)
    return NodeState(node, container_state, started, ip, snap.kernel, snap.os_image, problems)


@dataclass(frozen=True)
class ContainerState:
    name: str
    process: str  # pidfile stem
    running: bool  # its process is alive in the pod's netns
    ready: bool  # running, and the pod has its address (a server without one serves nobody)
    pid: int | None
    started: int | None


@dataclass(frozen=True)
class PodState:
    pod: Pod
    status: str  # Running, NotReady, or Unknown (the node cannot be read)
    ip: IPv4Interface | None  # read back from eth0 in the pod's netns
    host_ip: IPv4Interface | None
    sandbox: bool  # the pause process is alive in the pod's netns
    containers: tuple[ContainerState, ...]
    started: float | None  # when the pause process started
    problems: tuple[str, ...] = ()

    @property
    def ready_count(self) -> int:
        return sum(c.ready for c in self.containers)

    @property
    def ready(self) -> bool:
        return self.status == "Running"


def pod_state(lab: Lab, node: Node, pod: Pod, snap: NodeSnapshot | None, host_ip: IPv4Interface | None) -> PodState:
    """Running when the netns exists with an address on eth0, the pause process is alive inside it,
    and every container is alive: its process runs (inside the netns, for a process of the pod's
    own) and its ports listen in the pod's netns. NotReady otherwise; Unknown when the node itself
    could not be read."""
    expected = pod_containers(node, pod)
    if snap is None:
        unknown = tuple(ContainerState(c.name, c.process, False, False, None, None) for c in expected) or (
            ContainerState(pod.workload or pod.name, f"{pod.name}.pause", False, False, None, None),
        )
        return PodState(pod, "Unknown", None, None, False, unknown, None, (f"node {node.name} is not running",))

    problems: list[str] = []
    netns = snap.netns.get(pod.netns)
    ip = netns.addresses[0] if netns and netns.addresses else None
    if netns is None:
        problems.append(f"netns {pod.netns} is missing")
    elif ip is None:
        problems.append(f"no IPv4 address on eth0 in {pod.netns}")

    def inside(process: ProcessState | None) -> bool:
        return process is not None and netns is not None and process.inside(netns.inode)

    pause = snap.processes.get(f"{pod.name}.pause")
    sandbox = inside(pause)
    if netns is not None and not sandbox:
        problems.append(f"pause is not running in {pod.netns}")
    containers: list[ContainerState] = []
    for c in expected:
        process = snap.processes.get(c.process)
        alive = inside(process) if c.own_process else (process is not None and process.running)
        listening = netns is not None and set(c.ports) <= netns.listening
        running = alive and listening
        if netns is not None and not running:
            why = "is not running" if not alive else "does not listen on " + ", ".join(f"{p}/{t}" for t, p in c.ports)
            problems.append(f"container {c.name} {why}")
        pid, written = (process.pid, process.written) if process else (None, None)
        containers.append(ContainerState(c.name, c.process, running, running and ip is not None, pid, written))
    if not expected:  # a pod with nothing but its sandbox (busybox-like): the sandbox is its one container
        pid, written = (pause.pid, pause.written) if pause else (None, None)
        name = pod.workload or pod.name
        containers.append(ContainerState(name, f"{pod.name}.pause", sandbox, sandbox and ip is not None, pid, written))
    status = "NotReady" if problems else "Running"
    started = float(pause.written) if pause and pause.written else None
    return PodState(pod, status, ip, host_ip, sandbox, tuple(containers), started, tuple(problems))


# --------------------------------------------------------------------------------------------
# Services and endpoints: kube-proxy's rules as read, named with the model.
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EndpointView:
    ip: str
    port: int
    target: str  # the pod or node with this address, by the model ("" when unknown)
    kind: str  # Pod, Node, or ""
    node: str | None  # where a pod endpoint runs
    namespace: str = ""


@dataclass(frozen=True)
class PortView:
    name: str
    protocol: str
    port: int
    target_port: int | str
    node_port: int | None
    endpoints: tuple[EndpointView, ...]


@dataclass(frozen=True)
class ServiceView:
    namespace: str
    name: str
    type: str
    cluster_ip: str
    ports: tuple[PortView, ...]
    selector: dict[str, str]
    programmed: bool  # kube-proxy rules for it were found on the node read
    external_ips: tuple[str, ...] = ()  # spec.externalIPs, as the rules capture them
    load_balancer_ips: tuple[str, ...] = ()  # status.loadBalancer.ingress, as the rules capture them
    external_traffic_policy: str = ""  # "" where the API leaves it unset (ClusterIP without externalIPs)
    internal_traffic_policy: str = "Cluster"
    health_check_node_port: int | None = None
    source_ranges: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


def _endpoint_view(lab: Lab, address: str) -> EndpointView:
    ip, _, port = address.rpartition(":")
    for pod in lab.pods:
        if str(pod.ip) == ip:
            return EndpointView(ip, int(port), pod.name, "Pod", pod.node, pod.namespace)
    for node in lab.nodes:
        if str(node.ip) == ip:
            return EndpointView(ip, int(port), node.name, "Node", node.name)
    return EndpointView(ip, int(port), "", "", None)


PortKey = tuple[str, str, str, int]  # (ns/name, port name, protocol, port): how rules and model meet


def _key(rule: ServicePortRules) -> PortKey:
    return (rule.ref, rule.port_name, rule.protocol, rule.port)


def _service_type(ports: Sequence[PortView]) -> str:
    return "NodePort" if any(p.node_port for p in ports) else "ClusterIP"


def _lab_service_view(
    lab: Lab, svc: Service, rules: dict[PortKey, ServicePortRules], node: str, warnings: list[str]
) -> ServiceView:
    """A service of the lab as the rules program it; its ports without rules keep the plan's values."""
    if svc.headless:  # kube-proxy never programs one: its endpoints are the lab's, as DNS answers them
        headless = []
        for p in svc.ports:
            found = svc.endpoints.get(p.name or str(p.port), ())
            views = tuple(_endpoint_view(lab, f"{e.ip}:{e.port}") for e in found)
            headless.append(PortView(p.name, p.protocol, p.port, p.target_port, None, views))
        return ServiceView(svc.namespace, svc.name, "ClusterIP", "None", tuple(headless), svc.selector, False)
    ports = []
    ips = set()
    external: dict[str, None] = {}
    balanced: dict[str, None] = {}
    for port in svc.ports:
        rule = rules.get((svc.ref, port.name, port.protocol, port.port))
        if rule is None:
            warnings.append(f"{node}: no kube-proxy rules for {svc.ref} port {port.port}/{port.protocol}")
            ports.append(PortView(port.name, port.protocol, port.port, port.target_port, port.node_port, ()))
            continue
        ips.add(str(rule.cluster_ip))
        external.update(dict.fromkeys(map(str, rule.external_ips)))
        balanced.update(dict.fromkeys(map(str, rule.load_balancer_ips)))
        for ip in rule.refused_ips:  # a refused address does not say its kind: the lab's plan does
            (balanced if ip in svc.load_balancer_ips else external)[str(ip)] = None
        found_port = rule.chain or rule.node_port is not None  # 2018's REJECT rules don't say
        node_port = rule.node_port if found_port else port.node_port
        endpoints = tuple(_endpoint_view(lab, e) for e in rule.endpoints)
        ports.append(PortView(port.name, port.protocol, port.port, port.target_port, node_port, endpoints))
    if len(ips) > 1:
        warnings.append(f"{node}: {svc.ref} has rules for several cluster IPs: {', '.join(sorted(ips))}")
    cluster_ip = sorted(ips)[0] if ips else str(svc.cluster_ip)
    if ips and cluster_ip != str(svc.cluster_ip):
        warnings.append(f"{node}: {svc.ref} is programmed at {cluster_ip}, the lab planned {svc.cluster_ip}")
    return ServiceView(
        svc.namespace,
        svc.name,
        svc.type,
        cluster_ip,
        tuple(ports),
        svc.selector,
        bool(ips),
        tuple(external) if ips else tuple(map(str, svc.external_ips)),
        tuple(balanced) if ips else tuple(map(str, svc.load_balancer_ips)),
        svc.external_traffic_policy if svc.type != "ClusterIP" or svc.external_ips else "",
        svc.internal_traffic_policy,
        svc.health_check_node_port,
        tuple(map(str, svc.load_balancer_source_ranges)),
    )


def _stranger_view(lab: Lab, found: Sequence[ServicePortRules]) -> ServiceView:
    """A service the lab does not define, as its rules say (the first port's cluster IP)."""
    ports = [
        PortView(r.port_name, r.protocol, r.port, "", r.node_port, tuple(_endpoint_view(lab, e) for e in r.endpoints))
        for r in found
    ]
    first = found[0]
    external = tuple(dict.fromkeys(str(ip) for r in found for ip in (*r.external_ips, *r.refused_ips)))
    balanced = tuple(dict.fromkeys(str(ip) for r in found for ip in r.load_balancer_ips))
    kind = "LoadBalancer" if balanced else _service_type(ports)
    return ServiceView(
        first.namespace, first.name, kind, str(first.cluster_ip), tuple(ports), {}, True, external, balanced
    )


def service_views(lab: Lab, rules: Sequence[ServicePortRules], node: str) -> tuple[list[ServiceView], list[str]]:
    """Services as read from one node's rules, named and ordered with the model's help.

    A service of the lab with no rules on the node is still listed (the API object exists) with
    its planned cluster IP, and a warning says kube-proxy has not programmed it; rules for a
    service the lab does not know are listed as found. Returns (views, warnings).
    """
    warnings: list[str] = []
    by_key = {_key(r): r for r in rules}
    views = [_lab_service_view(lab, svc, by_key, node, warnings) for svc in lab.services]
    planned = {(svc.ref, p.name, p.protocol, p.port) for svc in lab.services for p in svc.ports}
    strangers: dict[str, list[ServicePortRules]] = {}
    for key, rule in by_key.items():
        if key not in planned:
            strangers.setdefault(rule.ref, []).append(rule)
    for ref, found in strangers.items():
        warnings.append(f"{node}: kube-proxy rules for {ref}, a service the lab does not define")
        views.append(_stranger_view(lab, found))
    return views, warnings


# --------------------------------------------------------------------------------------------
# The effects: docker calls, one exec per node, in parallel.
# --------------------------------------------------------------------------------------------
@dataclass
class LabReading:
    lab: Lab
    handle: LabHandle
    containers: dict[str, ContainerInfo]  # by node key (router included)

    def state(self, key: str) -> str:
        info = self.containers.get(key)
        return info.state if info is not None else "missing"

    def started(self, key: str) -> float | None:
        info = self.containers.get(key)
        return info.started if info is not None else None

    def snapshots(self, nodes: Sequence[str], iptables: bool = False) -> dict[str, NodeSnapshot | None]:
        """One exec per running node, in parallel; None for a node that is not running."""
        running = [n for n in nodes if self.state(n) == "running"]
        argv = snapshot_argv(iptables)
        read = in_threads(lambda key: self._snapshot(key, argv), running)
        return {key: read.get(key) for key in nodes}

    def _snapshot(self, key: str, argv: list[str]) -> NodeSnapshot:
        output = self.handle.enter(key, argv).output
        try:
            return parse_snapshot(output)
        except ValueError as err:
            raise LabError(f"{self.lab.container_name(key)}: cannot read its snapshot: {err}") from None


def open_lab(handle: LabHandle) -> LabReading:
    containers = handle.containers
    if not containers:
        raise LabError(f"no lab named {handle.name} on this host", hint="`labbuilder ls` lists the labs")
    if ROUTER in containers and not containers[ROUTER].running:
        raise LabError(
            f"lab {handle.name}: its router container is {containers[ROUTER].state}",
            hint=f"`labbuilder reset {handle.name}` brings it back",
        )
    return LabReading(handle.model(), handle, containers)


def read_nodes(reading: LabReading) -> list[NodeState]:
    lab = reading.lab
    snaps = reading.snapshots([n.name for n in lab.nodes])
    return [node_state(n, reading.state(n.name), reading.started(n.name), snaps[n.name]) for n in lab.nodes]


def read_pods(reading: LabReading) -> list[PodState]:
    lab = reading.lab
    nodes = [n for n in lab.nodes if n.pods]
    snaps = reading.snapshots([n.name for n in nodes])
    states: list[PodState] = []
    for node in nodes:
        snap = snaps[node.name]
        host_ip = snap.eth0[0] if snap and snap.eth0 else None
        states.extend(pod_state(lab, node, pod, snap, host_ip) for pod in node.pods)
    return states


def proxy_node(lab: Lab, reading: LabReading, wanted: str | None) -> str:
    """The node whose kube-proxy rules are read: the one asked for, else the first running worker."""
    names = [n.name for n in lab.nodes]
    if wanted:
        if wanted not in names:
            raise LabError(f"lab {lab.name} has no node {wanted}", hint=f"nodes: {', '.join(names)}")
        return wanted
    ordered = [n.name for n in lab.nodes if n.runs_pods] + [n.name for n in lab.nodes if not n.runs_pods]
    for name in ordered:
        if reading.state(name) == "running":
            return name
    raise LabError(f"lab {lab.name}: no node is running", hint=f"`labbuilder status {lab.name}`")


def read_services(reading: LabReading, node: str | None = None) -> tuple[list[ServiceView], list[str], str]:
    """(services, warnings, the node read) from one node's iptables-save."""
    lab = reading.lab
    key = proxy_node(lab, reading, node)
    snap = reading.snapshots([key], iptables=True)[key]
    if snap is None:
        raise LabError(f"node {key} of lab {lab.name} is {reading.state(key)}", hint="pick another with --node")
    if not snap.iptables or "*nat" not in snap.iptables:
        raise LabError(f"{lab.container_name(key)}: iptables-save printed no nat table")
    try:
        tables = parse_save(snap.iptables)
    except ValueError as err:
        raise LabError(f"{lab.container_name(key)}: cannot parse iptables-save: {err}") from None
    views, warnings = service_views(lab, parse_service_rules(tables), key)
    return views, warnings, key
