"""One grammar for places in a lab: what `check`, `trace`, `exec`, `get` and exercise files accept.

Places (where a command runs or a probe leaves from):
    router | node/router           the lab's router
    node/NAME  |  NAME             a node (a bare name is a node when a node has that exact name)
    pod/POD    |  POD              a pod: its name, `ns/name`, or a unique prefix of either;
                                   `POD@NODE` keeps the pods of one node (`nginx@worker-2`)
    NODE/POD                       a pod on that node (docker- and kubectl-exec style)
    IP                             the namespace that holds that address (a node, a pod, the router)
Targets (where a probe goes) are places, plus:
    service/NAME[.NS]  |  svc/…    a service's ClusterIP (default namespace: any, must be unique)
    any target followed by `:PORT`, `:PORT/tcp|udp` or `:icmp`
Policy for ambiguity, everywhere: a reference must name exactly one thing. An exact name wins
over a prefix; several matches are an error that lists them, so a check never silently picks
a different pod after a lab changes. Lives in `spec` because resolving a name needs only the
model, and `validate` reports unknown names with their line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from labbuilder.errors import LabError
from labbuilder.spec.model import ROUTER, Lab, Pod, Service

PLACES = "router, node/NAME, pod/NAME (or a unique prefix, NAME@NODE, ns/name), NODE/POD, or an IP"
TARGETS = PLACES.replace(", or an IP", ", service/NAME[.NS], or an IP") + ", each with :PORT[/PROTO] or :icmp"
_KINDS = {"pod": "pod", "po": "pod", "node": "node", "no": "node", "service": "service", "svc": "service"}
_PORT = re.compile(r"(?P<base>.+?):(?:(?P<port>\d{1,5})(?:/(?P<proto>tcp|udp))?|(?P<icmp>icmp))", re.IGNORECASE)


class RefError(LabError):
    """A reference that names nothing, or more than one thing."""


@dataclass(frozen=True)
class Place:
    """A network namespace of the lab: a container's own (netns None), or a pod's inside its node."""

    key: str  # container key: node name or ROUTER
    netns: str | None
    label: str  # for people: "pod default/nginx-… on worker-0", "node worker-0", "router"
    ref: str  # the canonical reference: "pod/nginx-…", "node/worker-0", "router"
    ip: str  # the address probes leave from
    pod: Pod | None = field(default=None, compare=False)  # the pod behind a pod netns (not hashable)


@dataclass(frozen=True)
class Target:
    ip: str
    port: int | None  # None: none given and none known (an IP, a pod without ports)
    protocol: str | None  # "tcp", "udp", "icmp"; None when the reference did not say
    label: str
    ref: str
    service: Service | None = None
    place: Place | None = None  # the namespace behind the address, when it is one of the lab's

    def __str__(self) -> str:
        if self.protocol == "icmp" or self.port is None:
            return f"{self.ip} (ICMP echo)"
        return f"{self.ip}:{self.port}/{self.protocol or 'tcp'}"


def pod(lab: Lab, query: str) -> Pod:
    """The one pod `query` names: `name`, `ns/name`, a unique prefix of either, `…@NODE`."""
    text, _, node = query.partition("@")
    if node and node not in {n.name for n in lab.nodes}:
        raise RefError(f"{query!r}: lab {lab.name} has no node {node!r}", hint="nodes: " + _names(lab))
    pods = [p for p in lab.pods if not node or p.node == node]
    exact = [p for p in pods if text in (p.name, p.ref)]
    found = exact or [p for p in pods if p.name.startswith(text) or p.ref.startswith(text)]
    if len(found) == 1:
        return found[0]
    where = f" on {node}" if node else ""
    if not found:
        known = ", ".join(f"{p.name}@{p.node}" for p in pods) or "none"
        raise RefError(f"no pod {text!r}{where} in lab {lab.name}", hint=f"pods{where}: {known}")
    listing = ", ".join(f"{p.name}@{p.node}" for p in found)
    raise RefError(
        f"{query!r} matches {len(found)} pods: {listing}", hint="give more of the name, or NAME@NODE to pick a node"
    )


def service(lab: Lab, query: str) -> Service:
    """A service by `name`, `name.ns` or `ns/name`."""
    if "/" in query:
        namespace, _, name = query.partition("/")
    else:
        name, _, namespace = query.partition(".")
    found = [s for s in lab.services if s.name == name and (not namespace or s.namespace == namespace)]
    if len(found) == 1:
        return found[0]
    listing = ", ".join(f"{s.name}.{s.namespace}" for s in (found or lab.services)) or "none"
    if not found:
        raise RefError(f"no service {query!r} in lab {lab.name}", hint=f"services: {listing}")
    raise RefError(f"service {query!r} is in {len(found)} namespaces: {listing}", hint="write it as NAME.NAMESPACE")


def _names(lab: Lab) -> str:
    return ", ".join(n.name for n in lab.nodes)


def _router(lab: Lab) -> Place:
    return Place(ROUTER, None, "router", ROUTER, str(lab.network.gateway))


def _node(lab: Lab, name: str) -> Place:
    if name == ROUTER:
        return _router(lab)
    try:
        node = lab.node(name)
    except KeyError:
        raise RefError(f"lab {lab.name} has no node {name!r}", hint="nodes: " + _names(lab)) from None
    return Place(node.name, None, f"node {node.name}", f"node/{node.name}", str(node.ip))


def pod_place(p: Pod) -> Place:
    return Place(p.node, p.netns, f"pod {p.ref} on {p.node}", f"pod/{p.name}", str(p.ip), p)


def place(lab: Lab, ref: str) -> Place:
    """The namespace `ref` names (see the module docstring for the grammar)."""
    ref = ref.strip()
    if not ref:
        raise RefError("an empty reference names nothing", hint=f"use {PLACES}")
    if ref == ROUTER:
        return _router(lab)
    head, slash, rest = ref.partition("/")
    if slash and head in _KINDS:
        kind = _KINDS[head]
        if kind == "node":
            return _node(lab, rest)
        if kind == "pod":
            return pod_place(pod(lab, rest))
        raise RefError(f"{ref}: a service is not a place to run from", hint=f"use {PLACES}")
    if slash and head in {n.name for n in lab.nodes}:
        return pod_place(pod(lab, f"{rest}@{head}"))
    if not slash and ref in {n.name for n in lab.nodes}:
        return _node(lab, ref)
    owner = _owner(lab, ref)
    if owner is not None:
        return owner
    try:
        return pod_place(pod(lab, ref))
    except RefError as err:
        if slash or "@" in ref or any(p.name.startswith(ref) for p in lab.pods):
            raise
        raise RefError(f"lab {lab.name} has no node, pod or address {ref!r}", hint=f"use {PLACES}") from err


def _owner(lab: Lab, text: str) -> Place | None:
    """The namespace holding address `text`; None when `text` is not an address."""
    try:
        ip = IPv4Address(text)
    except ValueError:
        return None
    if ip == lab.network.gateway:
        return _router(lab)
    for node in lab.nodes:
        if node.ip == ip:
            return _node(lab, node.name)
    for p in lab.pods:
        if p.ip == ip:
            return pod_place(p)
    raise RefError(f"no namespace of lab {lab.name} holds {ip}", hint=f"use {PLACES}")


def target(lab: Lab, ref: str) -> Target:
    """Where `ref` points: an address, maybe a port and protocol, and what is behind it."""
    base, port, proto = ref.strip(), None, None
    match = _PORT.fullmatch(base)
    if match:
        base = match.group("base")
        if match.group("icmp"):
            proto = "icmp"
        else:
            port = int(match.group("port"))
            proto = (match.group("proto") or "").lower() or None
            if not 0 < port < 65536:
                raise RefError(f"{ref}: port {port} is out of range", hint="ports are 1-65535")
    elif ":" in base and not base.startswith("service/"):
        raise RefError(f"{ref!r}: cannot read the port", hint="write :PORT, :PORT/tcp, :PORT/udp or :icmp")
    head, slash, rest = base.partition("/")
    if slash and _KINDS.get(head) == "service":
        svc = service(lab, rest)
        if svc.cluster_ip is None:
            raise RefError(
                f"service {svc.ref} is headless (clusterIP: None): it has no address to send to",
                hint="name one of its pods, or check its name with `dns:`",
            )
        chosen = next((p for p in svc.ports if port in (None, p.port)), None)
        if port is None and proto != "icmp" and chosen is not None:
            port = chosen.port
        if proto is None and chosen is not None and chosen.port == port:
            proto = chosen.protocol.lower()
        label = f"service {svc.ref}"
        short = f"service/{svc.name}" + ("" if svc.namespace == "default" else f".{svc.namespace}")
        return Target(str(svc.cluster_ip), port, proto, label, short, svc)
    try:
        IPv4Address(base)
        is_ip = True
    except ValueError:
        is_ip = False
    if is_ip:
        try:
            behind = _owner(lab, base)
        except RefError:
            behind = None  # an address outside the lab's namespaces (a ClusterIP, say) is fine as a target
        return Target(base, port, proto, base, base, None, behind)
    where = place(lab, base)
    if port is None and proto != "icmp":
        port = _default_port(lab, where)
    return Target(where.ip, port, proto, where.label, where.ref, None, where)


def _default_port(lab: Lab, where: Place) -> int | None:
    """A pod's first port, a node's first listening port (the apiserver's 6443 on controllers)."""
    if where.pod is not None:
        return where.pod.ports[0].port if where.pod.ports else None
    if where.key != ROUTER and where.netns is None:
        node = lab.node(where.key)
        return node.listen_ports[0] if node.listen_ports else None
    return None
