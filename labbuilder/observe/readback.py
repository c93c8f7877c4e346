"""Read a running lab back, the way kubectl reads a cluster: nodes, pods, services, endpoints.

Nothing here trusts the spec for what the kernel says: node addresses come from `eth0` in each
node, pod addresses and readiness from the pod's netns and the pidfiles of its processes,
services and endpoints from kube-proxy's rules in a node's `iptables-save`. The model (the
spec copy the router holds) only supplies names: which netns is which pod, which process is
which container, which endpoint address is which pod.

Three layers, so the parsing is testable on captured text:
- `SNAPSHOT_SCRIPT`/`parse_snapshot`: one `docker exec` per node prints everything, one parse;
- `node_state`, `pod_state`, `parse_service_rules`, `service_views`: pure derivations;
- `read_nodes`, `read_pods`, `read_services`: the effects (docker calls, in parallel).
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

from labbuilder import __version__
from labbuilder.compile.kubelet import pod_processes
from labbuilder.compile.kubeproxy import NODEPORTS, SERVICES, service_port_name
from labbuilder.compile.netfilter import Table, parse_save
from labbuilder.compile.ops import ROUTER, Process
from labbuilder.compile.paths import PID_DIR
from labbuilder.engine.runtime import ContainerInfo, LabHandle, in_threads
from labbuilder.errors import LabError
from labbuilder.spec.model import Lab, Node, Pod

# --------------------------------------------------------------------------------------------
# One exec per node: everything `get` needs, as `@section` lines followed by raw command output.
# --------------------------------------------------------------------------------------------
SNAPSHOT_SCRIPT = f"""exec 2>/dev/null
echo "@now $(date +%s)"
echo "@kernel $(uname -r)"
echo "@os $(. /etc/os-release && echo "$PRETTY_NAME")"
echo "@eth0"
ip -o -4 addr show dev eth0
for ns in $(ip netns list | cut -d' ' -f1); do
  echo "@netns $ns $(stat -L -c %i "/run/netns/$ns" || echo -)"
  ip -n "$ns" -o -4 addr show dev eth0
done
for f in {PID_DIR}/*.pid; do
  [ -f "$f" ] || continue
  pid=$(cat "$f"); state=-; net=-
  case "$pid" in
    ''|*[!0-9]*) pid=- ;;
    *) state=$(awk '/^State:/ {{print $2}}' "/proc/$pid/status" || true); state=${{state:--}}
       [ "$state" = - ] || net=$(readlink "/proc/$pid/ns/net" || echo '?') ;;
  esac
  echo "@pid $(basename "$f" .pid) $pid $(stat -c %Y "$f") $state $net"
done
if [ "$1" = iptables ]; then echo "@iptables"; iptables-save; fi
"""


def snapshot_argv(iptables: bool = False) -> list[str]:
    return ["sh", "-c", SNAPSHOT_SCRIPT, "snapshot", "iptables" if iptables else "-"]


@dataclass(frozen=True)
class NetnsState:
    name: str
    inode: int | None  # of /run/netns/<name>; None when it could not be read
    addresses: tuple[IPv4Interface, ...] = ()  # IPv4 on the pod's eth0


@dataclass(frozen=True)
class ProcessState:
    """A pidfile under /run/labbuilder/pids and the process it names."""

    name: str  # the pidfile's stem: `<pod>.pause`, `<pod>`, `<pod>.dns`, `<node>.server`
    pid: int | None
    written: int | None  # the pidfile's mtime: when the process was started
    state: str  # from /proc/PID/status (S, R, D, Z, ...); "-" when there is no such process
    # The process's network namespace; None when unknown: not running, or not readable (a
    # process that made itself non-dumpable, as dnsmasq does, hides /proc/PID/ns without
    # CAP_SYS_PTRACE).
    netns_inode: int | None = None

    @property
    def running(self) -> bool:
        return self.state not in ("-", "Z", "X", "x")

    def inside(self, inode: int | None) -> bool:
        """Running in the namespace with this inode (trusted when either side is unknown)."""
        return self.running and (inode is None or self.netns_inode is None or self.netns_inode == inode)


@dataclass
class NodeSnapshot:
    now: int | None = None
    kernel: str = ""
    os_image: str = ""
    eth0: tuple[IPv4Interface, ...] = ()
    netns: dict[str, NetnsState] = field(default_factory=dict)
    processes: dict[str, ProcessState] = field(default_factory=dict)
    iptables: str | None = None  # iptables-save output, when asked for


_INET = re.compile(r"\binet (\d{1,3}(?:\.\d{1,3}){3}/\d{1,2})\b")
_NS_INODE = re.compile(r"^net:\[(\d+)\]$")


def parse_ipv4_addresses(text: str) -> tuple[IPv4Interface, ...]:
    """The addresses in `ip -o -4 addr show` output, in the order shown."""
    return tuple(IPv4Interface(m.group(1)) for m in _INET.finditer(text))


def _int(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def parse_snapshot(text: str) -> NodeSnapshot:
    """Parse the output of `SNAPSHOT_SCRIPT`."""
    snap = NodeSnapshot()
    section, body = "", list[str]()
    netns_head: tuple[str, int | None] = ("", None)
    iptables: list[str] | None = None

    def flush() -> None:
        if section == "eth0":
            snap.eth0 = parse_ipv4_addresses("\n".join(body))
        elif section == "netns":
            name, inode = netns_head
            snap.netns[name] = NetnsState(name, inode, parse_ipv4_addresses("\n".join(body)))

    for line in text.splitlines():
        if iptables is not None:
            iptables.append(line)
            continue
        if not line.startswith("@"):
            body.append(line)
            continue
        flush()
        section, body = "", []
        head, _, rest = line[1:].partition(" ")
        words = rest.split()
        if head == "now":
            snap.now = _int(rest.strip())
        elif head == "kernel":
            snap.kernel = rest.strip()
        elif head == "os":
            snap.os_image = rest.strip()
        elif head == "eth0":
            section = "eth0"
        elif head == "netns" and words:
            section, netns_head = "netns", (words[0], _int(words[1]) if len(words) > 1 else None)
        elif head == "pid" and len(words) >= 5:
            match = _NS_INODE.match(words[4])
            snap.processes[words[0]] = ProcessState(
                words[0], _int(words[1]), _int(words[2]), words[3], int(match.group(1)) if match else None
            )
        elif head == "iptables":
            iptables = []
    flush()
    if iptables is not None:
        snap.iptables = "\n".join(iptables) + "\n"
    return snap


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


def container_name(pod: Pod, process: str) -> str:
    """A pod's process (pidfile stem) as a container name: `<pod>` is the workload's server."""
    if process == pod.name:
        return pod.workload or "server"
    return process.removeprefix(pod.name + ".")


def pod_containers(lab: Lab, node: Node, pod: Pod) -> list[str]:
    """The pidfile stems of the pod's containers (its processes other than the sandbox)."""
    names = []
    for op in pod_processes(lab, node):
        if isinstance(op, Process) and op.ns.netns == pod.netns and op.name != f"{pod.name}.pause":
            names.append(op.name)
    return names


def pod_state(lab: Lab, node: Node, pod: Pod, snap: NodeSnapshot | None, host_ip: IPv4Interface | None) -> PodState:
    """Running when the netns exists with an address on eth0, and the pause process and every
    container process are alive inside that netns; NotReady otherwise; Unknown when the node
    itself could not be read."""
    expected = pod_containers(lab, node, pod)
    if snap is None:
        unknown = tuple(
            ContainerState(container_name(pod, p), p, False, False, None, None)
            for p in expected or [f"{pod.name}.pause"]
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
    # A pod with nothing but its sandbox (busybox-like): the sandbox is its one container.
    for stem in expected or [f"{pod.name}.pause"]:
        process = snap.processes.get(stem)
        running = inside(process)
        name = container_name(pod, stem) if expected else (pod.workload or pod.name)
        if netns is not None and expected and not running:
            problems.append(f"container {name} is not running")
        pid, written = (process.pid, process.written) if process else (None, None)
        containers.append(ContainerState(name, stem, running, running and ip is not None, pid, written))
    status = "NotReady" if problems else "Running"
    started = float(pause.written) if pause and pause.written else None
    return PodState(pod, status, ip, host_ip, sandbox, tuple(containers), started, tuple(problems))


# --------------------------------------------------------------------------------------------
# Services and endpoints from kube-proxy's rules.
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServicePortRules:
    """One service port as kube-proxy programmed it on a node."""

    namespace: str
    name: str
    port_name: str
    protocol: str  # TCP, UDP
    cluster_ip: IPv4Address
    port: int
    node_port: int | None
    endpoints: tuple[str, ...]  # "ip:port", in the SVC chain's order
    chain: str  # KUBE-SVC-..., or "" for a port with no endpoints (a REJECT rule in filter)

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


def rule_options(rule: str) -> dict[str, str]:
    """The options of an iptables-save rule that matter here; negated ones are keyed `!opt`."""
    tokens = shlex.split(rule)
    out: dict[str, str] = {}
    negate = False
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == "!":
            negate = True
        elif token.startswith("-"):
            value = tokens[i + 1] if i + 1 < len(tokens) and not tokens[i + 1].startswith("-") else ""
            if value:
                i += 1
            key = ("!" if negate else "") + token
            if key not in out:  # first occurrence wins (-m repeats; the options read here don't)
                out[key] = value
            negate = False
        i += 1
    return out


def _split_spn(spn: str) -> tuple[str, str, str]:
    """`ns/name:port` (or `ns/name`, or 2018's `ns/name:`) → (ns, name, port name)."""
    ref, _, port_name = spn.partition(":")
    namespace, _, name = ref.partition("/")
    return namespace, name, port_name


def _cluster_ip(options: dict[str, str]) -> IPv4Address | None:
    dest = options.get("-d", "")
    try:
        return IPv4Address(dest.removesuffix("/32"))
    except ValueError:
        return None


def parse_service_rules(tables: dict[str, Table]) -> list[ServicePortRules]:
    """Service ports from `iptables-save` tables: nat KUBE-SERVICES → KUBE-SVC → KUBE-SEP's
    DNAT, KUBE-NODEPORTS (→ KUBE-EXT) → KUBE-SVC for node ports, and filter KUBE-SERVICES'
    REJECT rules for ports with no endpoints. Both kube-proxy styles (current and 2018)."""
    nat = tables.get("nat", Table("nat"))
    chains = nat.chains

    def jumps(chain: str, prefix: str) -> list[str]:
        out = []
        for rule in chains.get(chain, []):
            target = rule_options(rule).get("-j", "")
            if target.startswith(prefix) and target not in out:
                out.append(target)
        return out

    node_ports: dict[str, int] = {}
    for rule in chains.get(NODEPORTS, []):
        options = rule_options(rule)
        target, dport = options.get("-j", ""), options.get("--dport", "")
        if not dport.isdigit():
            continue
        if target.startswith("KUBE-EXT-"):
            for svc in jumps(target, "KUBE-SVC-"):
                node_ports[svc] = int(dport)
        elif target.startswith("KUBE-SVC-"):
            node_ports[target] = int(dport)

    found: list[ServicePortRules] = []
    for rule in chains.get(SERVICES, []):
        options = rule_options(rule)
        target = options.get("-j", "")
        spn = options.get("--comment", "").removesuffix(" cluster IP")
        ip = _cluster_ip(options)
        if not target.startswith("KUBE-SVC-") or ip is None or "/" not in spn:
            continue
        endpoints = []
        for sep in jumps(target, "KUBE-SEP-"):
            for sep_rule in chains.get(sep, []):
                sep_options = rule_options(sep_rule)
                if sep_options.get("-j") == "DNAT" and sep_options.get("--to-destination"):
                    endpoints.append(sep_options["--to-destination"])
        namespace, name, port_name = _split_spn(spn)
        found.append(
            ServicePortRules(
                namespace,
                name,
                port_name,
                options.get("-p", "tcp").upper(),
                ip,
                int(options.get("--dport", "0") or 0),
                node_ports.get(target),
                tuple(endpoints),
                target,
            )
        )

    for rule in tables.get("filter", Table("filter")).chains.get(SERVICES, []):
        options = rule_options(rule)
        comment = options.get("--comment", "")
        ip = _cluster_ip(options)
        if options.get("-j") != "REJECT" or not comment.endswith(" has no endpoints") or ip is None:
            continue
        namespace, name, port_name = _split_spn(comment.removesuffix(" has no endpoints"))
        found.append(
            ServicePortRules(
                namespace, name, port_name, options.get("-p", "tcp").upper(), ip, int(options.get("--dport", "0")),
                None, (), "",
            )
        )  # fmt: skip
    return found


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


def service_views(lab: Lab, rules: Sequence[ServicePortRules], node: str) -> tuple[list[ServiceView], list[str]]:
    """Services as read from one node's rules, named and ordered with the model's help.

    A service of the lab with no rules on the node is still listed (the API object exists) with
    its planned cluster IP, and a warning says kube-proxy has not programmed it; rules for a
    service the lab does not know are listed as found. Returns (views, warnings).
    """
    warnings = []
    by_key: dict[tuple[str, str, str, int], ServicePortRules] = {
        (r.ref, r.port_name, r.protocol, r.port): r for r in rules
    }
    used: set[tuple[str, str, str, int]] = set()
    views = []
    for svc in lab.services:
        ports = []
        ips = set()
        for port in svc.ports:
            port_name = _split_spn(service_port_name(svc, port, lab.proxy_style))[2]
            key: tuple[str, str, str, int] = (svc.ref, port_name, port.protocol, port.port)
            rule = by_key.get(key)
            if rule is None:
                warnings.append(f"{node}: no kube-proxy rules for {svc.ref} port {port.port}/{port.protocol}")
                ports.append(PortView(port.name, port.protocol, port.port, port.target_port, port.node_port, ()))
                continue
            used.add(key)
            ips.add(str(rule.cluster_ip))
            node_port = rule.node_port if rule.chain else port.node_port  # REJECT rules don't say
            endpoints = tuple(_endpoint_view(lab, e) for e in rule.endpoints)
            ports.append(PortView(port.name, port.protocol, port.port, port.target_port, node_port, endpoints))
        if len(ips) > 1:
            warnings.append(f"{node}: {svc.ref} has rules for several cluster IPs: {', '.join(sorted(ips))}")
        cluster_ip = sorted(ips)[0] if ips else str(svc.cluster_ip)
        if ips and cluster_ip != str(svc.cluster_ip):
            warnings.append(f"{node}: {svc.ref} is programmed at {cluster_ip}, the lab planned {svc.cluster_ip}")
        kind = "NodePort" if any(p.node_port for p in ports) else "ClusterIP"
        views.append(ServiceView(svc.namespace, svc.name, kind, cluster_ip, tuple(ports), svc.selector, bool(ips)))
    strangers: dict[str, list[ServicePortRules]] = {}
    for rule_key, rule in by_key.items():
        if rule_key not in used:
            strangers.setdefault(rule.ref, []).append(rule)
    for ref, found in strangers.items():
        warnings.append(f"{node}: kube-proxy rules for {ref}, a service the lab does not define")
        ports = [
            PortView(
                r.port_name, r.protocol, r.port, "", r.node_port, tuple(_endpoint_view(lab, e) for e in r.endpoints)
            )
            for r in found
        ]
        kind = "NodePort" if any(p.node_port for p in ports) else "ClusterIP"
        first = found[0]
        views.append(ServiceView(first.namespace, first.name, kind, str(first.cluster_ip), tuple(ports), {}, True))
    return views, warnings


# --------------------------------------------------------------------------------------------
# kubectl's formats: ages, ports, endpoints, roles.
# --------------------------------------------------------------------------------------------
def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery duration.HumanDuration, which kubectl prints as AGE."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def age(started: float | None, now: float | None = None) -> str:
    if started is None:
        return "<unknown>"
    return human_duration((time.time() if now is None else now) - started)


def format_ports(view: ServiceView) -> str:
    """PORT(S) as kubectl prints it: `80:31088/TCP,443/TCP`."""
    parts = [f"{p.port}{f':{p.node_port}' if p.node_port else ''}/{p.protocol}" for p in view.ports]
    return ",".join(parts) or "<none>"


def format_endpoints(view: ServiceView, limit: int | None = 3) -> str:
    """ENDPOINTS as kubectl prints it: ports in order, addresses per port, `+ N more...` past 3."""
    items = [f"{e.ip}:{e.port}" for p in view.ports for e in p.endpoints]
    if not items:
        return "<none>"
    if limit is not None and len(items) > limit:
        return ",".join(items[:limit]) + f" + {len(items) - limit} more..."
    return ",".join(items)


def node_roles(node: Node) -> str:
    return "control-plane" if node.role == "controller" else "<none>"


KUBELET_VERSION = f"labbuilder-v{__version__}"  # there is no kubelet: say who answers instead


def timestamp(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------------------------
# kubectl-shaped objects for -o json / -o yaml.
# --------------------------------------------------------------------------------------------
def as_list(items: Iterable[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "items": list(items), "metadata": {"resourceVersion": ""}}


def node_object(lab: Lab, state: NodeState, runtime_version: str = "") -> dict[str, Any]:
    node = state.node
    labels = {"kubernetes.io/hostname": node.name, "kubernetes.io/os": "linux", "labbuilder.role": node.role}
    if node.role == "controller":
        labels["node-role.kubernetes.io/control-plane"] = ""
    addresses = [{"type": "Hostname", "address": node.name}]
    if state.ip:
        addresses.insert(0, {"type": "InternalIP", "address": str(state.ip.ip)})
    spec: dict[str, Any] = {}
    if node.pod_cidr:
        spec = {"podCIDR": str(node.pod_cidr), "podCIDRs": [str(node.pod_cidr)]}
    ready = {"type": "Ready", "status": "True" if state.ready else "False"}
    if state.problems:
        ready["message"] = "; ".join(state.problems)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": labels,
            "annotations": {"labbuilder/container": lab.container_name(node.name)},
            "creationTimestamp": timestamp(state.started),
        },
        "spec": spec,
        "status": {
            "addresses": addresses,
            "conditions": [ready],
            "nodeInfo": {
                "kernelVersion": state.kernel,
                "osImage": state.os_image,
                "containerRuntimeVersion": runtime_version,
                "kubeletVersion": KUBELET_VERSION,
            },
        },
    }


def pod_object(lab: Lab, state: PodState) -> dict[str, Any]:
    pod = state.pod
    ready = {"type": "Ready", "status": "True" if state.ready else "False"}
    if state.problems:
        ready["message"] = "; ".join(state.problems)
    status: dict[str, Any] = {
        "phase": "Running" if state.sandbox else ("Unknown" if state.status == "Unknown" else "Pending"),
        "conditions": [ready],
        "hostIP": str(state.host_ip.ip) if state.host_ip else None,
        "podIP": str(state.ip.ip) if state.ip else None,
        "podIPs": [{"ip": str(state.ip.ip)}] if state.ip else [],
        "startTime": timestamp(state.started),
        "containerStatuses": [
            {
                "name": c.name,
                "ready": c.ready,
                "restartCount": 0,
                "started": c.running,
                "state": {"running": {"startedAt": timestamp(c.started)}} if c.running else {"terminated": {}},
                "containerID": f"pid://{c.pid}" if c.pid else None,
            }
            for c in state.containers
        ],
    }
    ports = [{"containerPort": p.port, "protocol": p.protocol} for p in pod.ports]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod.name,
            "namespace": pod.namespace,
            "labels": dict(pod.labels),
            "annotations": {
                "labbuilder/netns": pod.netns,
                "labbuilder/host-veth": pod.host_veth,
                "labbuilder/container": lab.container_name(pod.node),
            },
            "creationTimestamp": timestamp(state.started),
        },
        "spec": {
            "nodeName": pod.node,
            "containers": [{"name": c.name, **({"ports": ports} if ports else {})} for c in state.containers],
        },
        "status": status,
    }


def service_object(view: ServiceView, created: float | None) -> dict[str, Any]:
    ports = []
    for p in view.ports:
        port: dict[str, Any] = {"port": p.port, "protocol": p.protocol, "targetPort": p.target_port}
        if p.name:
            port = {"name": p.name, **port}
        if p.node_port:
            port["nodePort"] = p.node_port
        ports.append(port)
    spec: dict[str, Any] = {
        "type": view.type,
        "clusterIP": view.cluster_ip,
        "clusterIPs": [view.cluster_ip],
        "ports": ports,
    }
    if view.selector:
        spec["selector"] = dict(view.selector)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": view.name, "namespace": view.namespace, "creationTimestamp": timestamp(created)},
        "spec": spec,
        "status": {"loadBalancer": {}},
    }


def endpoints_object(view: ServiceView, created: float | None) -> dict[str, Any]:
    """Endpoints as the API shows them: one subset per distinct address set."""
    subsets: list[dict[str, Any]] = []
    for p in view.ports:
        if not p.endpoints:
            continue
        addresses = []
        for e in p.endpoints:
            address: dict[str, Any] = {"ip": e.ip}
            if e.node:
                address["nodeName"] = e.node
            if e.kind == "Pod":
                address["targetRef"] = {"kind": "Pod", "name": e.target, "namespace": e.namespace}
            addresses.append(address)
        port = {"name": p.name, "port": p.endpoints[0].port, "protocol": p.protocol} if p.name else {
            "port": p.endpoints[0].port, "protocol": p.protocol
        }  # fmt: skip
        for subset in subsets:
            if subset["addresses"] == addresses:
                subset["ports"].append(port)
                break
        else:
            subsets.append({"addresses": addresses, "ports": [port]})
    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": view.name, "namespace": view.namespace, "creationTimestamp": timestamp(created)},
        "subsets": subsets,
    }


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
        read = in_threads(lambda key: parse_snapshot(self.handle.exec(key, argv).output), running)
        return {key: read.get(key) for key in nodes}


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
