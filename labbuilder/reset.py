"""Reset a running lab to its pristine state: prune what a learner added, restore what was lost.

Desired state comes from the plan (the same operations `up` applies); actual state is read
from the kernel and the containers. Only differences are touched, and each is reported:
a lab that is intact is left as it is.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from ipaddress import IPv4Interface, IPv4Network

from labbuilder.apply import RULES_FILE, Applier, NetlinkOp, apply_netlink
from labbuilder.lab import ensure_containers, running_model
from labbuilder.netfilter import normalise, parse_save
from labbuilder.netlink import Netlink
from labbuilder.plan import (
    ROUTER,
    AddNetns,
    Address,
    Bridge,
    Iptables,
    Ns,
    Op,
    Plan,
    Process,
    Route,
    Veth,
    Vxlan,
    WriteFile,
    compile_plan,
)
from labbuilder.runtime.docker import DockerRuntime

# Link kinds a learner can add and reset may remove; others (tunl0, sit0…) come with the kernel.
PRUNABLE_KINDS = {"veth", "bridge", "vxlan", "dummy", "macvlan", "ipvlan", "vlan"}


@dataclass
class NsState:
    """What one namespace must hold."""

    links: set[str] = field(default_factory=lambda: {"lo"})
    addresses: set[tuple[str, str]] = field(default_factory=lambda: {("lo", "127.0.0.1/8")})
    routes: set[tuple[str, str | None]] = field(default_factory=set)
    connected: list[Route] = field(default_factory=list)  # an address's proto-kernel prefix route


def route_key(dst: str, via: str | None) -> tuple[str, str | None]:
    return (str(IPv4Network("0.0.0.0/0" if dst == "default" else dst)), via)


def show_route(dst: str, via: str | None) -> str:
    return ("default" if dst == "0.0.0.0/0" else dst) + (f" via {via}" if via else "")


def desired_state(plan: Plan) -> dict[Ns, NsState]:
    """Per namespace: its links, addresses and routes, as the plan makes them. Pure."""
    states: dict[Ns, NsState] = {}

    def state(ns: Ns) -> NsState:
        return states.setdefault(ns, NsState())

    for _, op in plan.ops():
        match op:
            case Veth():
                state(op.ns).links.add(op.name)
                state(op.peer_ns).links.add(op.peer_name)
            case Bridge() | Vxlan():
                state(op.ns).links.add(op.name)
            case AddNetns():
                state(op.ns)
            case Address():
                state(op.ns).addresses.add((op.ifname, op.cidr))
                interface = IPv4Interface(op.cidr)
                if interface.network.prefixlen < 32:
                    state(op.ns).routes.add(route_key(str(interface.network), None))
                    state(op.ns).connected.append(
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
                state(op.ns).routes.add(route_key(op.dst, op.via))
    return states


class Reconciler:
    """Brings one container (and the pod namespaces inside it) back to the plan."""

    def __init__(self, applier: Applier, plan: Plan, desired: dict[Ns, NsState], key: str):
        self.applier, self.plan, self.desired, self.key = applier, plan, desired, key
        self.container = applier.containers[key]
        self.pid = applier.pids[key]
        self.repairs: list[str] = []

    def note(self, what: str) -> None:
        self.repairs.append(f"{self.key}: {what}")

    def run(self) -> list[str]:
        ops = self.plan.steps[self.key]
        self.netns(ops)
        with Netlink(self.applier.pids) as nl:
            for ns, want in self.desired.items():
                if ns.container == self.key:
                    self.prune(nl, ns, want)
            # Links and addresses first, then the prefix routes a flush took, then the planned
            # routes, whose gateways need those prefix routes to resolve.
            for op in ops:
                if isinstance(op, NetlinkOp) and not isinstance(op, Route):
                    apply_netlink(nl, op)
            for ns, want in self.desired.items():
                if ns.container == self.key:
                    self.restore_connected(nl, ns, want)
            for op in ops:
                if isinstance(op, Route):
                    apply_netlink(nl, op)
            for ns in self.desired:
                if ns.container == self.key:
                    for name in nl.restore_link_local(ns):
                        self.note(f"IPv6 link-local address of {name}{' in ' + ns.netns if ns.netns else ''} restored")
        self.files([op for op in ops if isinstance(op, WriteFile)])
        self.iptables([op for op in ops if isinstance(op, Iptables)])
        for name in self.applier.start_processes(self.container, [op for op in ops if isinstance(op, Process)]):
            self.note(f"process {name} restarted")
        return self.repairs

    def netns(self, ops: Sequence[Op]) -> None:
        wanted = {op.ns.netns for op in ops if isinstance(op, AddNetns)}
        folder = f"/proc/{self.pid}/root/run/netns"
        present = set(os.listdir(folder)) if os.path.isdir(folder) else set()
        for stray in sorted(present - wanted):
            self.applier.runtime.run(self.container, ["ip", "netns", "del", stray])
            self.note(f"netns {stray} removed")
        missing = [op for op in ops if isinstance(op, AddNetns) and op.ns.netns not in present]
        for op in missing:
            self.note(f"netns {op.ns.netns} recreated")
        self.applier.add_netns(self.container, missing)

    def prune(self, nl: Netlink, ns: Ns, want: NsState) -> None:
        where = f" in {ns.netns}" if ns.netns else ""
        links = nl.links(ns)
        for name, link in sorted(links.items()):
            if name not in want.links and link.kind in PRUNABLE_KINDS:
                nl.delete_link(ns, name)
                self.note(f"stray link {name}{where} removed")
        for name in sorted(want.links - set(links)):
            self.note(f"link {name}{where} restored")
        for name in sorted(want.links & set(links)):
            if not links[name].up:
                self.note(f"link {name}{where} set up")
        present = nl.addresses(ns)
        for ifname, cidr in sorted(present - want.addresses):
            nl.delete_address(ns, ifname, cidr)
            self.note(f"stray address {cidr} on {ifname}{where} removed")
        for ifname, cidr in sorted(want.addresses - present):
            self.note(f"address {cidr} on {ifname}{where} restored")
        routes = nl.routes(ns)
        for key, route in sorted(routes.items(), key=lambda kv: kv[0][0]):
            if key not in want.routes:
                nl.delete_route(ns, route)
                self.note(f"stray route {show_route(*key)}{where} removed")
        for dst, via in sorted(want.routes - set(routes), key=lambda k: k[0]):
            self.note(f"route {show_route(dst, via)}{where} restored")

    def restore_connected(self, nl: Netlink, ns: Ns, want: NsState) -> None:
        """Addresses no operation makes (lo's), and the prefix routes a flushed table lost."""
        for ifname, cidr in sorted(want.addresses - nl.addresses(ns)):
            apply_netlink(nl, Address(ns, ifname, cidr))
        present = nl.routes(ns)
        for route in want.connected:
            if route_key(route.dst, None) not in present:
                apply_netlink(nl, route)

    def files(self, ops: list[WriteFile]) -> None:
        if not ops:
            return
        out = self.applier.runtime.exec(self.container, ["sha256sum", *[op.path for op in ops]]).output
        sums = {line.split()[1]: line.split()[0] for line in out.splitlines() if len(line.split()) == 2}
        changed = {
            op.path: op.content for op in ops if sums.get(op.path) != hashlib.sha256(op.content.encode()).hexdigest()
        }
        if changed:
            self.applier.runtime.put_files(self.container, changed)
            for path in changed:
                self.note(f"file {path} restored")

    def iptables(self, ops: list[Iptables]) -> None:
        if not ops:
            return
        saved = self.applier.runtime.run(self.container, ["iptables-save"])
        want, have = normalise(parse_save(ops[-1].payload)), normalise(parse_save(saved))
        if want != have:
            tables = sorted(t for t in want if want[t] != have.get(t))
            self.applier.runtime.put_files(self.container, {RULES_FILE: ops[-1].payload})
            self.applier.runtime.run(self.container, ["iptables-restore", RULES_FILE])
            self.note(f"iptables {', '.join(tables)} restored")


def reset(
    name: str, runtime: DockerRuntime | None = None, progress: Callable[[str], None] = lambda _: None
) -> list[str]:
    """Reset lab NAME in place; returns what was repaired (empty when it was intact)."""
    runtime = runtime or DockerRuntime()
    lab = running_model(name, runtime)
    plan = compile_plan(lab)
    repairs: list[str] = []
    containers, created = ensure_containers(runtime, plan, progress)
    repairs += [f"{key}: container recreated" for key in created]
    applier = Applier(runtime, containers, {key: runtime.pid(c) for key, c in containers.items()})
    desired = desired_state(plan)
    repairs += Reconciler(applier, plan, desired, ROUTER).run()
    nodes = [key for key in plan.steps if key != ROUTER]
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(nodes)))) as pool:
        for result in pool.map(lambda key: Reconciler(applier, plan, desired, key).run(), nodes):
            repairs += result
    return repairs
