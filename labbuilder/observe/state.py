"""What a running lab holds, read back from the kernel and the containers: the observed side of `diff`.

Per container, one exec prints the pod namespaces present, the checksums of the files the plan
writes, `iptables-save`, and which planned processes are alive; links, addresses and routes of
every namespace come from netlink (sockets opened inside each namespace by path). Reading
changes nothing.
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass, field

from labbuilder.compile.kubelet import ALIVE_SH
from labbuilder.compile.ops import Iptables, Ns, Op, Process, WriteFile
from labbuilder.compile.paths import pidfile
from labbuilder.compile.plan import Plan
from labbuilder.engine.netlink import LinkState, Netlink, RouteKey
from labbuilder.engine.runtime import LabHandle, in_threads


@dataclass(frozen=True)
class NsObserved:
    links: dict[str, LinkState]
    addresses: frozenset[tuple[str, str]]  # (ifname, "ip/prefix"), IPv4
    routes: dict[RouteKey, dict[str, object]]  # main-table IPv4 routes, with what deleting one needs
    no_link_local: tuple[str, ...] = ()  # links that lost their IPv6 link-local address


@dataclass
class ContainerObserved:
    key: str
    state: str  # running, exited, ... or "missing"
    netns: frozenset[str] = frozenset()
    files: dict[str, str | None] = field(default_factory=dict)  # path -> sha256, None when absent
    iptables: str | None = None  # iptables-save, when the plan has rules here
    processes: dict[str, bool] = field(default_factory=dict)  # planned process -> alive
    namespaces: dict[Ns, NsObserved] = field(default_factory=dict)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def state_script(ops: list[Op]) -> str:
    """One exec: `@section` lines, each followed by the raw output of one command."""
    files = [op.path for op in ops if isinstance(op, WriteFile)]
    names = [op.name for op in ops if isinstance(op, Process)]
    # Only live namespaces: a name whose mount did not survive a restart is a missing netns.
    lines = ["exec 2>/dev/null", "echo @netns", "for n in $(ls /run/netns); do ip netns exec $n true && echo $n; done"]
    if files:
        lines += ["echo @files", f"sha256sum {shlex.join(files)} || true"]
    if any(isinstance(op, Iptables) for op in ops):
        lines += ["echo @iptables", "iptables-save"]
    if names:
        lines += [ALIVE_SH, "echo @processes"]
        lines += [f'if alive {shlex.quote(pidfile(n))}; then echo "up {n}"; else echo "down {n}"; fi' for n in names]
    return "\n".join(lines)


def parse_state(key: str, text: str, ops: list[Op]) -> ContainerObserved:
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        if line.startswith("@") and line[1:] in ("netns", "files", "iptables", "processes"):
            current = sections.setdefault(line[1:], [])
        else:
            current.append(line)
    sums = {}
    for line in sections.get("files", []):
        digest, _, path = line.partition("  ")
        sums[path] = digest
    observed = ContainerObserved(key, "running")
    observed.netns = frozenset(n.strip() for n in sections.get("netns", []) if n.strip())
    observed.files = {op.path: sums.get(op.path) for op in ops if isinstance(op, WriteFile)}
    if "iptables" in sections:
        observed.iptables = "\n".join(sections["iptables"]) + "\n"
    observed.processes = {
        words[1]: words[0] == "up"
        for words in (line.split(None, 1) for line in sections.get("processes", []))
        if len(words) == 2
    }
    return observed


def namespaces_of(plan: Plan, key: str) -> list[Ns]:
    """The namespaces inside container `key` that the plan touches: its own, and its pods'."""
    found = {Ns(key)}
    for _, op in plan.ops():
        for ns in (op.ns, getattr(op, "peer_ns", None)):
            if ns is not None and ns.container == key:
                found.add(ns)
    return sorted(found, key=lambda ns: ns.netns or "")


def observe_container(handle: LabHandle, plan: Plan, key: str) -> ContainerObserved:
    info = handle.containers.get(key)
    if info is None or not info.running:
        return ContainerObserved(key, info.state if info else "missing")
    ops = [op for op in plan.steps.get(key, ()) if op.ns.container == key]
    observed = parse_state(key, handle.exec(key, ["sh", "-c", state_script(ops)]).output, ops)
    with Netlink(handle.ns_path) as nl:
        for ns in namespaces_of(plan, key):
            if ns.netns and ns.netns not in observed.netns:
                continue  # a missing pod netns is one difference, not one per link inside it
            observed.namespaces[ns] = NsObserved(
                nl.links(ns), frozenset(nl.addresses(ns)), nl.routes(ns), tuple(nl.missing_link_local(ns))
            )
    return observed


def observe(handle: LabHandle, plan: Plan) -> dict[str, ContainerObserved]:
    """Every container of the plan, read in parallel."""
    handle.refresh()
    return in_threads(lambda key: observe_container(handle, plan, key), [c.key for c in plan.containers])
