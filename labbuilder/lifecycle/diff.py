"""diff(plan, observed): what differs between a running lab and its pristine state. Pure.

The desired side comes from the plan (the same operations `up` applies), the observed side
from `observe.state`. Each `Difference` says what a learner changed — in words for `labbuilder
diff`, as a repair for `reset` — and which container's operations put it back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Interface, IPv4Network
from typing import Literal

from labbuilder.compile.netfilter import normalise, parse_save
from labbuilder.compile.netpol import ipset
from labbuilder.compile.netpol.kube_router import kube_router
from labbuilder.compile.nft import differences, listed, parse_listing, parse_transaction
from labbuilder.compile.ops import (
    AddNetns,
    Address,
    Bridge,
    Ipsets,
    Iptables,
    LinkUp,
    Master,
    Nftables,
    Ns,
    Route,
    Veth,
    Vxlan,
    WriteFile,
)
from labbuilder.compile.plan import Plan
from labbuilder.observe.state import ContainerObserved, NsObserved, RouteKey, sha256

# Link kinds a learner can add and reset may remove; others (tunl0, sit0…) come with the kernel.
PRUNABLE_KINDS = {"veth", "bridge", "vxlan", "dummy", "macvlan", "ipvlan", "vlan"}

Kind = Literal[
    "container", "netns", "link", "address", "route", "link-local", "file", "ipset", "iptables", "nftables", "process"
]
Change = Literal["missing", "added", "changed", "down", "stopped"]
_REPAIRED = {"missing": "restored", "added": "removed", "changed": "restored", "down": "set up", "stopped": "started"}


@dataclass(frozen=True)
class Difference:
    key: str  # the container it was seen in
    kind: Kind
    what: str  # "route default via 10.240.0.1", "address 10.240.0.250/24 on lab0"
    change: Change
    ns: Ns | None = None
    owner: str = ""  # the container whose operations restore it (a veth is made from its peer's side)
    remove: tuple[object, ...] = ()  # for added things: what deleting them needs

    @property
    def where(self) -> str:
        return f" in {self.ns.netns}" if self.ns and self.ns.netns else ""

    def __str__(self) -> str:
        """As `labbuilder diff` prints it: `worker-0: route default via 10.240.0.1 missing`."""
        return f"{self.key}: {self.what}{self.where} {self.change}"

    @property
    def repair(self) -> str:
        """As `reset` reports it: `worker-0: route default via 10.240.0.1 restored`."""
        if self.kind == "container":
            return f"{self.key}: container {'recreated' if self.change == 'missing' else 'started'}"
        if self.kind == "process":
            return f"{self.key}: {self.what} restarted"
        if self.kind == "link-local":
            link = self.what.removeprefix("link-local of ")
            return f"{self.key}: IPv6 link-local address of {link}{self.where} restored"
        stray = "stray " if self.change == "added" and self.kind != "netns" else ""
        return f"{self.key}: {stray}{self.what}{self.where} {_REPAIRED[self.change]}"


@dataclass
class NsDesired:
    """What one namespace must hold, and which container's operations make each part."""

    links: dict[str, str] = field(default_factory=lambda: {"lo": ""})
    up: set[str] = field(default_factory=set)
    masters: dict[str, str] = field(default_factory=dict)
    addresses: dict[tuple[str, str], str] = field(default_factory=lambda: {("lo", "127.0.0.1/8"): ""})
    routes: dict[RouteKey, str] = field(default_factory=dict)
    connected: list[Route] = field(default_factory=list)  # an address's proto-kernel prefix route


def route_key(dst: str, via: str | None) -> RouteKey:
    return (str(IPv4Network("0.0.0.0/0" if dst == "default" else dst)), via)


def show_route(key: RouteKey) -> str:
    dst, via = key
    return ("default" if dst == "0.0.0.0/0" else dst) + (f" via {via}" if via else "")


def desired_state(plan: Plan) -> dict[Ns, NsDesired]:
    """Per namespace: its links, addresses and routes as the plan makes them, with their owners."""
    states: dict[Ns, NsDesired] = {}

    def state(ns: Ns) -> NsDesired:
        return states.setdefault(ns, NsDesired())

    for owner, op in plan.ops():
        match op:
            case Veth():
                state(op.ns).links[op.name] = owner
                state(op.peer_ns).links[op.peer_name] = owner
            case Bridge() | Vxlan():
                state(op.ns).links[op.name] = owner
            case AddNetns():
                state(op.ns)
            case LinkUp():
                state(op.ns).up.add(op.ifname)
            case Master():
                state(op.ns).masters[op.ifname] = op.master
            case Address():
                want = state(op.ns)
                want.addresses[(op.ifname, op.cidr)] = owner
                interface = IPv4Interface(op.cidr)
                if interface.network.prefixlen < 32:
                    want.routes.setdefault(route_key(str(interface.network), None), owner)
                    want.connected.append(
                        Route(
                            op.ns,
                            str(interface.network),
                            dev=op.ifname,
                            scope="link",
                            src=str(interface.ip),
                            proto="kernel",
                        )
                    )
            case Route():
                state(op.ns).routes[route_key(op.dst, op.via)] = owner
    for want in states.values():
        _superseded(want)
    return states


def _superseded(want: NsDesired) -> None:
    """A planned `route replace` of an address's own prefix takes the kernel's connected route's
    place (same destination, table and metric): ptp's `podCIDR via gateway` in a pod."""
    planned = {dst for dst, via in want.routes if via is not None}
    for route in [r for r in want.connected if route_key(r.dst, None)[0] in planned]:
        want.connected.remove(route)
        want.routes.pop(route_key(route.dst, None), None)


def diff(plan: Plan, observed: dict[str, ContainerObserved]) -> list[Difference]:
    """Every difference between the plan and what the lab holds, container by container."""
    desired = desired_state(plan)
    netpol = kube_router(plan.lab)
    sets = netpol.ipsets if netpol else ()  # the same on every node: computed once
    found: list[Difference] = []
    for spec in plan.containers:
        seen = observed[spec.key]
        if seen.state != "running":
            found.append(
                Difference(
                    spec.key, "container", f"container {spec.name}", _container_change(seen.state), owner=spec.key
                )
            )
            continue
        found += _netns(plan, spec.key, seen)
        for ns, want in desired.items():
            if ns.container == spec.key and ns in seen.namespaces:
                found += _namespace(spec.key, ns, want, seen.namespaces[ns])
        found += _files_rules_processes(plan, spec.key, seen, sets)
    return found


def _container_change(state: str) -> Change:
    return "missing" if state == "missing" else "stopped"


def _netns(plan: Plan, key: str, seen: ContainerObserved) -> list[Difference]:
    wanted = {op.ns.netns for op in plan.steps.get(key, ()) if isinstance(op, AddNetns) and op.ns.netns}
    out = [
        Difference(key, "netns", f"netns {name}", "added", owner=key, remove=(name,))
        for name in sorted(seen.netns - wanted)
    ]
    out += [Difference(key, "netns", f"netns {name}", "missing", owner=key) for name in sorted(wanted - seen.netns)]
    return out


def _namespace(key: str, ns: Ns, want: NsDesired, have: NsObserved) -> list[Difference]:
    out: list[Difference] = []
    for name, link in sorted(have.links.items()):
        if name not in want.links and link.kind in PRUNABLE_KINDS:
            out.append(Difference(key, "link", f"link {name}", "added", ns, key, (name,)))
    for name, owner in sorted(want.links.items()):
        if name not in have.links:
            out.append(Difference(key, "link", f"link {name}", "missing", ns, owner or key))
        elif name in want.up and not have.links[name].up:
            out.append(Difference(key, "link", f"link {name}", "down", ns, key))
        elif name in want.masters and have.links[name].master != want.masters[name]:
            out.append(Difference(key, "link", f"link {name} on {want.masters[name]}", "changed", ns, key))
    for ifname, cidr in sorted(have.addresses - set(want.addresses)):
        out.append(Difference(key, "address", f"address {cidr} on {ifname}", "added", ns, key, (ifname, cidr)))
    for (ifname, cidr), owner in sorted(want.addresses.items()):
        if (ifname, cidr) not in have.addresses and ifname in have.links:
            out.append(Difference(key, "address", f"address {cidr} on {ifname}", "missing", ns, owner or key))
    for rkey, route in sorted(have.routes.items(), key=lambda kv: kv[0][0]):
        if rkey not in want.routes:
            out.append(Difference(key, "route", f"route {show_route(rkey)}", "added", ns, key, (route,)))
    for rkey, owner in sorted(want.routes.items(), key=lambda kv: kv[0][0]):
        if rkey not in have.routes:
            out.append(Difference(key, "route", f"route {show_route(rkey)}", "missing", ns, owner or key))
    for name in have.no_link_local:
        if name in want.links:
            out.append(Difference(key, "link-local", f"link-local of {name}", "missing", ns, key))
    return out


def _files_rules_processes(
    plan: Plan, key: str, seen: ContainerObserved, sets: tuple[ipset.IpSet, ...] = ()
) -> list[Difference]:
    out: list[Difference] = []
    ops = plan.steps.get(key, ())
    for op in ops:
        if isinstance(op, WriteFile) and op.ns.container == key and seen.files.get(op.path) != sha256(op.content):
            change: Change = "missing" if seen.files.get(op.path) is None else "changed"
            out.append(Difference(key, "file", f"file {op.path}", change, owner=key))
    if any(isinstance(op, Ipsets) for op in ops) and seen.ipsets is not None:
        out += _ipsets(sets, key, seen.ipsets)
    rules = [op for op in ops if isinstance(op, Iptables)]
    if rules and seen.iptables is not None:
        want, have = normalise(parse_save(rules[-1].payload)), normalise(parse_save(seen.iptables))
        for table in sorted(t for t in want if want[t] != have.get(t)):
            what = f"iptables {table}"
            chains = sorted(c for c in set(want[table]) | set(have.get(table, {})) if _policy_chain(c))
            changed = [c for c in chains if want[table].get(c) != have.get(table, {}).get(c)]
            if changed:  # name kube-router's chains: which policy or pod firewall a learner touched
                what += " (" + ", ".join(changed) + ")"
            out.append(Difference(key, "iptables", what, "changed", owner=key))
    for op in (op for op in ops if isinstance(op, Nftables)):
        out += _nftables(key, op, seen.nftables)
    for name, alive in seen.processes.items():
        if not alive:
            out.append(Difference(key, "process", f"process {name}", "stopped", owner=key))
    return out


def _policy_chain(chain: str) -> bool:
    return chain.startswith(("KUBE-NWPLCY-", "KUBE-POD-FW-", "KUBE-ROUTER-"))


def _ipsets(sets: tuple[ipset.IpSet, ...], key: str, saved: str) -> list[Difference]:
    """kube-router's sets: a set missing, a member missing or added (what `ipset del/add` did)."""
    have = ipset.parse_save(saved)
    out: list[Difference] = []
    for want in sets:
        if want.name not in have:
            out.append(Difference(key, "ipset", f"ipset {want.name}", "missing", owner=key))
            continue
        members = have[want.name][1]
        for m in sorted(want.members - members):
            out.append(Difference(key, "ipset", f"ipset {want.name} member {m}", "missing", owner=key))
        for m in sorted(members - want.members):
            out.append(
                Difference(key, "ipset", f"ipset {want.name} member {m}", "added", owner=key, remove=(want.name, m))
            )
    return out


def _nftables(key: str, op: Nftables, text: str | None) -> list[Difference]:
    """kube-proxy's table as the node lists it against the plan's: one difference per chain, set,
    map or element (`nftables ip kube-proxy: map service-ips element … missing`). Any of them is
    repaired the same way: the whole table again, in one transaction."""
    want = parse_transaction(op.payload) if text is not None else None
    if want is None:
        return []
    where = f"nftables {op.family} {op.table}"
    out = []
    for what, change in differences(listed(want), parse_listing(text or "")):
        label = where if what == "table" else f"{where}: {what}"
        out.append(Difference(key, "nftables", label, change, owner=key))  # type: ignore[arg-type]
    return out
