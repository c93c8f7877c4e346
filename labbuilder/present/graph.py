"""The lab as a picture: router, node network, nodes, bridges, pods and services with their endpoints.

Three renderings of one model: a self-contained HTML page with a hand-laid-out SVG (no script, no
external resources; services on a layer a checkbox hides), Graphviz dot, and Mermaid. Layout is
computed here as plain boxes and paths; `templates/graph.html.j2` only draws them. With
`policies` (a port and protocol) the edges the lab's NetworkPolicies allow between pods are drawn
over it, computed from the spec by the policy semantics (what `check --matrix --expect` expects).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from labbuilder.compile.cni import mode_for
from labbuilder.compile.netpol.semantics import allowed
from labbuilder.compile.plan import uplink_name
from labbuilder.resources import template
from labbuilder.spec.model import Endpoint, Lab, Node, Pod, Protocol, Service
from labbuilder.spec.truthtable import matrix_pods

Policies = tuple[int, Protocol] | None  # the port and protocol whose allowed edges are drawn

FORMATS = ("html", "dot", "mermaid")
MARGIN, NODE_W, GAP, PER_ROW = 24, 250, 26, 6
POD_H, POD_GAP, SVC_W, SVC_H = 52, 8, 250, 58


@dataclass
class Text:
    x: float
    y: float
    text: str
    cls: str = ""
    anchor: str = "start"


@dataclass
class Box:
    x: float
    y: float
    w: float
    h: float
    cls: str
    title: str = ""  # tooltip: the details that do not fit
    texts: list[Text] = field(default_factory=list)
    key: str = ""  # data-key: the pod, node or service it draws


@dataclass
class Path:
    d: str
    cls: str


@dataclass
class Layer:
    name: str
    boxes: list[Box] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    texts: list[Text] = field(default_factory=list)


@dataclass
class Picture:
    width: float
    height: float
    layers: list[Layer]


def _bridge(lab: Lab) -> str | None:
    """The bridge the pods hang on, as the mode builds it (flannel's cni0, not the lab's cnio0)."""
    return mode_for(lab).pod_bridge(lab)


def _pod_box(lab: Lab, pod: Pod, x: float, y: float, w: float) -> Box:
    title = f"{pod.ref}\nIP {pod.ip}\nnetns {pod.netns}\nnode side {pod.host_veth}\nlabels " + ",".join(
        f"{k}={v}" for k, v in pod.labels.items()
    )
    ports = ",".join(f"{p.port}/{p.protocol}" for p in pod.ports)
    return Box(
        x,
        y,
        w,
        POD_H,
        "pod",
        title,
        [
            Text(x + 8, y + 16, pod.name, "name"),
            Text(x + 8, y + 31, f"{pod.ip}  {pod.host_veth}", "addr"),
            Text(x + 8, y + 45, f"ports {ports}" if ports else "no ports (a client)", "note"),
        ],
        f"pod:{pod.ref}",
    )


def _node_boxes(lab: Lab, node: Node, x: float, y: float) -> tuple[list[Box], list[Path], float]:
    """A node with its bridge and pods; returns the boxes, the veth lines and the node's height."""
    boxes: list[Box] = []
    paths: list[Path] = []
    lines = [Text(x + 10, y + 20, node.name, "title"), Text(x + NODE_W - 10, y + 20, node.role, "role", "end")]
    lines.append(Text(x + 10, y + 38, f"eth0 {node.ip}/{lab.network.cidr.prefixlen}", "addr"))
    inner = y + 46
    if node.pod_cidr is not None:
        lines.append(Text(x + 10, y + 54, f"podCIDR {node.pod_cidr}", "addr"))
        inner = y + 64
    mode = mode_for(lab)
    if mode.node_routes(lab):  # host-gw: a route per other node's podCIDR
        for other in (o for o in lab.nodes if o.pod_cidr is not None and o.name != node.name):
            lines.append(Text(x + 10, inner + 8, f"{other.pod_cidr} via {other.ip}", "addr"))
            inner += 16
    if node.listen_ports:
        lines.append(Text(x + 10, inner + 8, "listens " + " ".join(f":{p}" for p in node.listen_ports), "addr"))
        inner += 18
    if mode.overlay and node.pod_cidr is not None:
        lines.append(Text(x + 10, inner + 8, mode.overlay, "addr"))
        inner += 18
    bridge = _bridge(lab)
    if node.pod_cidr is not None and bridge:
        boxes.append(
            Box(
                x + 10,
                inner,
                NODE_W - 20,
                22,
                "bridge",
                f"Linux bridge {bridge} on {node.name}: the pods' gateway",
                [Text(x + 18, inner + 15, f"{bridge}  {node.pod_gateway}/{node.pod_cidr.prefixlen}", "addr")],
                f"bridge:{node.name}",
            )
        )
        inner += 22
    elif node.pod_cidr is not None:
        lines.append(Text(x + 10, inner + 8, "ptp: a veth + /32 route per pod", "addr"))
        inner += 12
    top = inner + 12
    for i, pod in enumerate(node.pods):
        py = top + i * (POD_H + POD_GAP)
        boxes.append(_pod_box(lab, pod, x + 26, py, NODE_W - 36))
        paths.append(Path(f"M{x + 16},{inner} V{py + POD_H / 2} H{x + 26}", "veth"))
    height = (top + len(node.pods) * (POD_H + POD_GAP) if node.pods else inner + 6) - y + 4
    title = f"{node.name} ({node.role})\ncontainer {lab.container_name(node.name)}\neth0 {node.ip}"
    title += f"\npodCIDR {node.pod_cidr}" if node.pod_cidr else ""
    return [Box(x, y, NODE_W, height, f"node {node.role}", title, lines, f"node:{node.name}"), *boxes], paths, height


def _service_box(lab: Lab, svc: Service, x: float, y: float) -> Box:
    ports = ", ".join(f"{p.port}{':' + str(p.node_port) if p.node_port else ''}/{p.protocol}" for p in svc.ports)
    endpoints = sorted({f"{e.ip}:{e.port} ({e.target})" for eps in svc.endpoints.values() for e in eps})
    title = f"{svc.ref} {svc.type}\nClusterIP {svc.cluster_ip}\nendpoints:\n" + ("\n".join(endpoints) or "<none>")
    return Box(
        x,
        y,
        SVC_W,
        SVC_H,
        "service",
        title,
        [
            Text(x + 10, y + 18, svc.ref, "name"),
            Text(x + SVC_W - 10, y + 18, svc.type, "role", "end"),
            Text(x + 10, y + 36, f"{svc.cluster_ip}  {ports}", "addr"),
            Text(x + 10, y + 51, f"{len(endpoints)} endpoint(s)", "note"),
        ],
        f"service:{svc.ref}",
    )


def layout(lab: Lab) -> Picture:
    """Router on top, the node network as a bus, nodes in rows below it, services under the nodes."""
    base, services = Layer("base"), []
    columns = min(PER_ROW, max(1, len(lab.nodes)))
    width = max(2 * MARGIN + columns * NODE_W + (columns - 1) * GAP, 2 * MARGIN + 2 * SVC_W + GAP)
    routes = [(n.pod_cidr, n.ip) for n in lab.nodes if n.pod_cidr and mode_for(lab).router_routes(lab)]
    rw, rh = 300, 62 + 15 * len(routes)
    rx, ry = (width - rw) / 2, MARGIN + 34
    router_texts = [
        Text(rx + 10, ry + 20, "router", "title"),
        Text(rx + rw - 10, ry + 20, lab.router_name, "role", "end"),
        Text(rx + 10, ry + 38, f"{lab.network.bridge}  {lab.network.gateway_interface}", "addr"),
    ]
    router_texts += [Text(rx + 10, ry + 56 + 15 * i, f"{cidr} via {ip}", "addr") for i, (cidr, ip) in enumerate(routes)]
    base.boxes.append(Box(rx, ry, rw, rh, "router", f"container {lab.router_name}", router_texts, "router"))
    bus: float = ry + rh + 34
    base.paths.append(Path(f"M{width / 2},{ry + rh} V{bus}", "wire"))
    base.boxes.append(
        Box(
            MARGIN,
            bus - 11,
            width - 2 * MARGIN,
            22,
            "network",
            "the node network: every node's eth0 is a veth whose peer is a port of the router's bridge",
            [Text(MARGIN + 10, bus + 4, f"node network {lab.network.cidr}  (bridge {lab.network.bridge})", "addr")],
            "network",
        )
    )
    top, bottom = bus + 50.0, bus
    anchors: dict[str, tuple[float, float]] = {}
    for row in range(0, len(lab.nodes), columns):
        heights = []
        for col, node in enumerate(lab.nodes[row : row + columns]):
            x = MARGIN + col * (NODE_W + GAP)
            boxes, paths, height = _node_boxes(lab, node, x, top)
            base.boxes += boxes
            base.paths += paths
            base.paths.append(Path(f"M{x + NODE_W / 2},{bus + 11} V{top}", "wire"))
            base.texts.append(Text(x + NODE_W / 2 + 6, bus + 30, uplink_name(node), "port"))
            anchors[node.name] = (x + NODE_W / 2, top + height)
            heights.append(height)
        top += max(heights) + 40
        bottom = top
    pods = {b.key: b for b in base.boxes if b.cls == "pod"}
    sy = bottom + 30
    per_row = max(1, int((width - 2 * MARGIN + GAP) // (SVC_W + GAP)))
    for i, svc in enumerate(lab.services):
        x = MARGIN + (i % per_row) * (SVC_W + GAP)
        y = sy + (i // per_row) * (SVC_H + 40)
        layer = Layer("services", [_service_box(lab, svc, x, y)])
        services.append(layer)
        seen = set()
        for ep in (e for eps in svc.endpoints.values() for e in eps):
            pod = next((p for p in lab.pods if p.ip == ep.ip), None)
            if pod is not None and f"pod:{pod.ref}" in pods:
                box = pods[f"pod:{pod.ref}"]
                ex, ey = box.x + box.w - 14, box.y + box.h
            elif ep.target in anchors:
                ex, ey = anchors[ep.target]
            else:
                continue
            if (ex, ey) in seen:
                continue
            seen.add((ex, ey))
            sx, sy0 = x + SVC_W / 2, y
            layer.paths.append(Path(f"M{sx},{sy0} C{sx},{sy0 - 70} {ex},{ey + 70} {ex},{ey}", "endpoint"))
            layer.paths.append(Path(f"M{ex - 3},{ey} a3,3 0 1,0 6,0 a3,3 0 1,0 -6,0", "endpoint-dot"))
    rows = (len(lab.services) + per_row - 1) // per_row
    height = sy + rows * (SVC_H + 40) + MARGIN
    return Picture(width, height, [base, *services])


def allowed_edges(lab: Lab, policies: Policies) -> list[tuple[Pod, Pod]]:
    """(from, to) of every pair of pods serving the port that the policies let connect."""
    if policies is None:
        return []
    port, protocol = policies
    pods = list(matrix_pods(lab, port, protocol).values())
    return [(a, b) for a in pods for b in pods if a.ref != b.ref and allowed(lab, a, b, port, protocol)]


def _policy_layer(lab: Lab, picture: Picture, policies: Policies) -> Layer:
    """Allowed edges as curves from the left edge of one pod box to another's."""
    layer = Layer("policies")
    boxes = {b.key: b for layer_ in picture.layers for b in layer_.boxes if b.cls == "pod"}
    for a, b in allowed_edges(lab, policies):
        one, two = boxes.get(f"pod:{a.ref}"), boxes.get(f"pod:{b.ref}")
        if one is None or two is None:
            continue
        x1, y1, x2, y2 = one.x, one.y + one.h / 2 - 6, two.x, two.y + two.h / 2 + 6
        bend = 40 + abs(y2 - y1) / 4
        layer.paths.append(Path(f"M{x1},{y1} C{x1 - bend},{y1} {x2 - bend},{y2} {x2},{y2}", "allowed"))
        layer.paths.append(Path(f"M{x2},{y2} l-7,-4 v8 z", "allowed-head"))
    return layer


def to_html(lab: Lab, policies: Policies = None) -> str:
    bridge = _bridge(lab)
    details = [*([f"bridge {bridge}"] if bridge else []), f"ipMasq {'on' if lab.cni.ip_masq else 'off'}"]
    mode = mode_for(lab)
    details.append(mode.between_nodes(lab))
    summary = (
        f"CNI {mode.name} ({', '.join(details)}) · pods {lab.cluster.pod_cidr}"
        f" · services {lab.cluster.service_cidr} · DNS {lab.cluster.dns_ip}"
    )
    picture = layout(lab)
    if policies is not None:
        picture.layers.append(_policy_layer(lab, picture, policies))
        summary += f" · green arrows: connections the NetworkPolicies allow on {policies[0]}/{policies[1]}"
    return template("graph.html.j2").render(lab=lab, picture=picture, summary=summary, policies=policies)


# -- text graphs -----------------------------------------------------------------------------
def _id(text: str) -> str:
    return re.sub(r"\W", "_", text)


def _q(text: str) -> str:
    return '"' + text.replace('"', '\\"') + '"'


def to_dot(lab: Lab, services: bool = True, policies: Policies = None) -> str:
    nl = "\\n"  # a line break inside a dot label
    router = f"router{nl}{lab.network.bridge} {lab.network.gateway_interface}"
    out = [
        f"digraph {_q(lab.name)} {{",
        f"  graph [rankdir=TB, fontname=Helvetica, label={_q('lab ' + lab.name)}, labelloc=t];",
        '  node [shape=box, style="rounded,filled", fontname=Helvetica, fillcolor="#ffffff"];',
        "  edge [arrowhead=none, fontname=Helvetica, fontsize=10];",
        f'  router [label={_q(router)}, fillcolor="#dbe4f0"];',
    ]
    bridge = _bridge(lab)
    for node in lab.nodes:
        n = _id(node.name)
        title = f"{node.name} ({node.role})" + (f"{nl}podCIDR {node.pod_cidr}" if node.pod_cidr else "")
        out += [f"  subgraph cluster_{n} {{", f'    label={_q(title)}; style="rounded"; color="#8a99ad";']
        out.append(f'    {n}_eth0 [label={_q(f"eth0 {node.ip}")}, fillcolor="#eef2f7"];')
        hub = f"{n}_eth0"
        if node.pod_cidr is not None and bridge:
            hub = f"{n}_bridge"
            gateway = f"{bridge} {node.pod_gateway}/{node.pod_cidr.prefixlen}"
            out.append(f'    {hub} [label={_q(gateway)}, fillcolor="#fdf1d6"];')
            out.append(f"    {n}_eth0 -> {hub} [style=dotted, label=routing];")
        for pod in node.pods:
            p = _id("pod_" + pod.ref)
            out.append(f'    {p} [label={_q(f"{pod.name}{nl}{pod.ip}")}, fillcolor="#e3f4e1"];')
            out.append(f"    {hub} -> {p} [label={_q(pod.host_veth)}];")
        out += ["  }", f"  router -> {n}_eth0 [label={_q(uplink_name(node))}];"]
    if services:
        for svc in lab.services:
            s = _id("svc_" + svc.ref)
            out.append(f'  {s} [shape=ellipse, label={_q(f"{svc.ref}{nl}{svc.cluster_ip}")}, fillcolor="#fde3cf"];')
            for ep, to in _endpoint_ids(lab, svc):
                out.append(f"  {s} -> {to} [style=dashed, arrowhead=normal, label={_q(str(ep.port))}];")
    for a, b in allowed_edges(lab, policies):
        out.append(
            f'  {_id("pod_" + a.ref)} -> {_id("pod_" + b.ref)} [color="#2e7d32", arrowhead=normal, constraint=false];'
        )
    out.append("}")
    return "\n".join(out) + "\n"


def _endpoint_ids(lab: Lab, svc: Service) -> list[tuple[Endpoint, str]]:
    """Each distinct endpoint of a service, with the graph id of the pod or node behind it."""
    found = []
    for ep in sorted({e for eps in svc.endpoints.values() for e in eps}, key=lambda e: (e.ip, e.port)):
        pod = next((p for p in lab.pods if p.ip == ep.ip), None)
        found.append((ep, _id("pod_" + pod.ref) if pod else f"{_id(ep.target)}_eth0"))
    return found


def to_mermaid(lab: Lab, services: bool = True, policies: Policies = None) -> str:
    def label(*parts: str) -> str:
        return '["' + "<br/>".join(p.replace('"', "#quot;") for p in parts) + '"]'

    out = ["flowchart TB", f"  router{label('router', f'{lab.network.bridge} {lab.network.gateway_interface}')}"]
    bridge = _bridge(lab)
    for node in lab.nodes:
        n = _id(node.name)
        title = f"{node.name} ({node.role})" + (f" podCIDR {node.pod_cidr}" if node.pod_cidr else "")
        out.append(f'  subgraph {n}["{title}"]')
        out.append(f"    {n}_eth0{label(f'eth0 {node.ip}')}")
        hub = f"{n}_eth0"
        if node.pod_cidr is not None and bridge:
            hub = f"{n}_bridge"
            out.append(f"    {hub}{label(f'{bridge} {node.pod_gateway}/{node.pod_cidr.prefixlen}')}")
            out.append(f"    {n}_eth0 -.- {hub}")
        for pod in node.pods:
            out.append(f"    {_id('pod_' + pod.ref)}{label(pod.name, str(pod.ip))}")
            out.append(f"    {hub} ---|{pod.host_veth}| {_id('pod_' + pod.ref)}")
        out.append("  end")
        out.append(f"  router ---|{uplink_name(node)}| {n}_eth0")
    if services:
        for svc in lab.services:
            s = _id("svc_" + svc.ref)
            out.append(f'  {s}(["{svc.ref}<br/>{svc.cluster_ip}"])')
            out += [f"  {s} -.->|{ep.port}| {to}" for ep, to in _endpoint_ids(lab, svc)]
    out += [f"  {_id('pod_' + a.ref)} ==> {_id('pod_' + b.ref)}" for a, b in allowed_edges(lab, policies)]
    return "\n".join(out) + "\n"


def render(lab: Lab, fmt: str, services: bool = True, policies: Policies = None) -> str:
    if fmt == "dot":
        return to_dot(lab, services, policies)
    if fmt == "mermaid":
        return to_mermaid(lab, services, policies)
    return to_html(lab, policies)
