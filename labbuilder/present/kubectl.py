"""kubectl's shapes drawn from a lab's read-back state: its columns, formats and API objects.

Pure: takes the states observe.readback derives (nodes, pods, services) and returns rows, text
and dicts; `labbuilder get` (cli.kubectl) prints them.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from labbuilder import __version__
from labbuilder.observe.readback import NodeState, PodState, ServiceView
from labbuilder.spec.model import Lab, Node


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


def external_ip(view: ServiceView, wide: bool = False) -> str:
    """EXTERNAL-IP as kubectl prints it (getServiceExternalIP): externalIPs, and for a LoadBalancer
    its ingress addresses first (cut to 16 characters unless -o wide), or <pending> without one."""
    if view.type != "LoadBalancer":
        return ",".join(view.external_ips) or "<none>"
    balanced = ",".join(view.load_balancer_ips)
    if not wide and len(balanced) > 16:  # loadBalancerStatusStringer
        balanced = balanced[:13] + "..."
    if view.external_ips:
        return ",".join([*([balanced] if balanced else []), *view.external_ips])
    return balanced or "<pending>"


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
    ports = [
        {**({"name": p.name} if p.name else {}), "containerPort": p.port, "protocol": p.protocol} for p in pod.ports
    ]
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
        "internalTrafficPolicy": view.internal_traffic_policy,
    }
    if view.selector:
        spec["selector"] = dict(view.selector)
    if view.external_ips:
        spec["externalIPs"] = list(view.external_ips)
    if view.external_traffic_policy:
        spec["externalTrafficPolicy"] = view.external_traffic_policy
    if view.health_check_node_port:
        spec["healthCheckNodePort"] = view.health_check_node_port
    if view.source_ranges:
        spec["loadBalancerSourceRanges"] = list(view.source_ranges)
    ingress = [{"ip": ip, "ipMode": "VIP"} for ip in view.load_balancer_ips]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": view.name, "namespace": view.namespace, "creationTimestamp": timestamp(created)},
        "spec": spec,
        "status": {"loadBalancer": {"ingress": ingress} if ingress else {}},
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
# Columns: plain like kubectl's tabwriter (three spaces between columns, no lines).
# --------------------------------------------------------------------------------------------
def render_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """kubectl's plain columns, laid out by rich, never wrapped or cut, no trailing spaces."""
    table = Table(box=None, show_edge=False, pad_edge=False, padding=(0, 3, 0, 0), header_style="")
    for header in headers:
        table.add_column(header, no_wrap=True)
    for row in rows:
        table.add_row(*row)
    measure = Console(width=100_000, color_system=None)
    width = Measurement.get(measure, measure.options, table).maximum
    buffer = io.StringIO()
    Console(file=buffer, width=max(width, 1), color_system=None, highlight=False).print(table)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines())


NODE_HEADERS = ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
NODE_WIDE = ["INTERNAL-IP", "EXTERNAL-IP", "POD-CIDR", "OS-IMAGE", "KERNEL-VERSION", "CONTAINER-RUNTIME"]


def node_rows(states: Sequence[NodeState], wide: bool, runtime: str = "", now: float | None = None) -> list[list[str]]:
    rows = []
    for s in states:
        row = [s.node.name, s.status, node_roles(s.node), age(s.started, now)]
        row.append(KUBELET_VERSION)
        if wide:
            row += [
                str(s.ip.ip) if s.ip else "<none>",
                "<none>",
                str(s.node.pod_cidr or "<none>"),
                s.os_image or "<unknown>",
                s.kernel or "<unknown>",
                runtime or "<unknown>",
            ]
        rows.append(row)
    return rows


def pod_rows(
    states: Sequence[PodState], wide: bool, all_namespaces: bool, now: float | None = None
) -> tuple[list[str], list[list[str]]]:
    headers = ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    if all_namespaces:
        headers.insert(0, "NAMESPACE")
    if wide:
        headers += ["IP", "NODE", "NOMINATED NODE", "READINESS GATES"]
    rows = []
    for s in states:
        row = [s.pod.name, f"{s.ready_count}/{len(s.containers)}", s.status, "0", age(s.started, now)]
        if all_namespaces:
            row.insert(0, s.pod.namespace)
        if wide:
            row += [str(s.ip.ip) if s.ip else "<none>", s.pod.node, "<none>", "<none>"]
        rows.append(row)
    return headers, rows


def service_rows(
    views: Sequence[ServiceView], wide: bool, all_namespaces: bool, age: str
) -> tuple[list[str], list[list[str]]]:
    headers = ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    if all_namespaces:
        headers.insert(0, "NAMESPACE")
    if wide:
        headers.append("SELECTOR")
    rows = []
    for v in views:
        row = [v.name, v.type, v.cluster_ip, external_ip(v, wide), format_ports(v), age]
        if all_namespaces:
            row.insert(0, v.namespace)
        if wide:
            row.append(",".join(f"{k}={val}" for k, val in v.selector.items()) or "<none>")
        rows.append(row)
    return headers, rows


def endpoint_rows(
    views: Sequence[ServiceView], wide: bool, all_namespaces: bool, age: str
) -> tuple[list[str], list[list[str]]]:
    headers = ["NAME", "ENDPOINTS", "AGE"]
    if all_namespaces:
        headers.insert(0, "NAMESPACE")
    rows = []
    for v in views:
        row = [v.name, format_endpoints(v, limit=None if wide else 3), age]
        if all_namespaces:
            row.insert(0, v.namespace)
        rows.append(row)
    return headers, rows
