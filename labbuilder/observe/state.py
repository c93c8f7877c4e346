"""What a running lab holds, read back from the kernel and the containers: the observed side of `diff`.

Per container, ONE short process entered into its namespaces prints everything: the pod
namespaces alive, every planned namespace's links, addresses and routes as `ip -j` JSON
(iproute2's own structure, read with json.loads), the checksums of the files the plan writes,
`ipset save` (kube-router's sets), `iptables-save`, `nft list table` of kube-proxy's table in
nftables mode, and which planned processes are alive. Reading changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from typing import Any

from labbuilder.compile.kubelet import ALIVE_SH
from labbuilder.compile.ops import Ipsets, Iptables, Nftables, Ns, Op, Process, WriteFile
from labbuilder.compile.paths import pidfile
from labbuilder.compile.plan import Plan
from labbuilder.engine.runtime import LabHandle, in_threads

RouteKey = tuple[str, str | None]  # (destination "a.b.c.d/n", gateway or None)


@dataclass(frozen=True)
class LinkState:
    kind: str | None  # "veth", "bridge", "vxlan"…; None for lo and kinds without link info
    up: bool
    master: str | None


@dataclass(frozen=True)
class NsObserved:
    links: dict[str, LinkState]
    addresses: frozenset[tuple[str, str]]  # (ifname, "ip/prefix"), IPv4
    routes: dict[RouteKey, dict[str, str]]  # main-table IPv4 routes, with what deleting one needs
    no_link_local: tuple[str, ...] = ()  # links that lost their IPv6 link-local address


@dataclass
class ContainerObserved:
    key: str
    state: str  # running, exited, ... or "missing"
    netns: frozenset[str] = frozenset()
    files: dict[str, str | None] = field(default_factory=dict)  # path -> sha256, None when absent
    iptables: str | None = None  # iptables-save, when the plan has rules here
    ipsets: str | None = None  # ipset save, when the plan has sets here
    nftables: str | None = None  # `nft list table` of the plan's nftables table (kube-proxy's), when it has one
    processes: dict[str, bool] = field(default_factory=dict)  # planned process -> alive
    namespaces: dict[Ns, NsObserved] = field(default_factory=dict)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def state_script(ops: list[Op], namespaces: list[Ns]) -> str:
    """`@section` lines, each followed by the raw output of one command."""
    files = [op.path for op in ops if isinstance(op, WriteFile)]
    names = [op.name for op in ops if isinstance(op, Process)]
    # Only live namespaces: a name whose mount did not survive a restart is a missing netns.
    lines = [
        "exec 2>/dev/null",
        "live=$(for n in $(ls /run/netns); do ip netns exec $n true && echo $n; done)",
        'echo @netns; echo "$live"',
    ]
    for ns in namespaces:
        where, label = (f"-n {shlex.quote(ns.netns)} ", ns.netns) if ns.netns else ("", "-")
        check = f'echo "$live" | grep -qx {shlex.quote(ns.netns)} && ' if ns.netns else ""
        reads = [
            f"echo '@links {label}'; ip {where}-j -d link show",
            f"echo '@addrs {label}'; ip {where}-j addr show",
            f"echo '@routes {label}'; ip {where}-j -4 route show table main",
        ]
        lines.append(f"{check}{{ {'; '.join(reads)}; }}")
    if files:
        lines += ["echo @files", f"sha256sum {shlex.join(files)}"]
    if any(isinstance(op, Ipsets) for op in ops):
        lines += ["echo @ipsets", "ipset save"]
    if any(isinstance(op, Iptables) for op in ops):
        lines += ["echo @iptables", "iptables-save"]
    for op in (op for op in ops if isinstance(op, Nftables)):
        lines += ["echo @nftables", f"nft list table {op.family} {shlex.quote(op.table)}"]
    if names:
        lines += [ALIVE_SH, "echo @processes"]
        lines += [f'if alive {shlex.quote(pidfile(n))}; then echo "up {n}"; else echo "down {n}"; fi' for n in names]
    return "\n".join([*lines, "true"])


def _sections(text: str) -> dict[tuple[str, str], list[str]]:
    found: dict[tuple[str, str], list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        head, _, rest = line.partition(" ")
        if line.startswith("@") and head[1:] in (
            "netns",
            "links",
            "addrs",
            "routes",
            "files",
            "ipsets",
            "iptables",
            "nftables",
            "processes",
        ):
            current = found.setdefault((head[1:], rest.strip()), [])
        else:
            current.append(line)
    return found


def _json(lines: list[str]) -> list[dict[str, Any]]:
    text = "\n".join(lines).strip()
    return list(json.loads(text)) if text else []


def parse_links(links: list[dict[str, Any]]) -> dict[str, LinkState]:
    return {
        link["ifname"]: LinkState(
            link.get("linkinfo", {}).get("info_kind"), "UP" in link.get("flags", []), link.get("master")
        )
        for link in links
    }


def parse_addresses(links: list[dict[str, Any]]) -> frozenset[tuple[str, str]]:
    return frozenset(
        (link["ifname"], f"{a['local']}/{a['prefixlen']}")
        for link in links
        for a in link.get("addr_info", [])
        if a.get("family") == "inet"
    )


def parse_link_local(links: list[dict[str, Any]], details: list[dict[str, Any]]) -> tuple[str, ...]:
    """Links up with a MAC but no IPv6 link-local address — where IPv6 is on (lo holds ::1)."""
    if not any(a.get("family") == "inet6" for link in links for a in link.get("addr_info", [])):
        return ()
    have = {
        link["ifname"] for link in links for a in link.get("addr_info", []) if a.get("local", "").startswith("fe80:")
    }
    return tuple(
        d["ifname"]
        for d in details
        if d["ifname"] != "lo"
        and d.get("link_type") == "ether"
        and "UP" in d.get("flags", [])
        and d["ifname"] not in have
    )


def parse_routes(routes: list[dict[str, Any]]) -> dict[RouteKey, dict[str, str]]:
    found = {}
    for route in routes:
        dst = route.get("dst", "")
        dst = "0.0.0.0/0" if dst == "default" else str(IPv4Network(dst))
        key = (dst, route.get("gateway"))
        found[key] = {k: v for k, v in (("dst", dst), ("via", route.get("gateway")), ("dev", route.get("dev"))) if v}
    return found


def parse_state(key: str, text: str, ops: list[Op], namespaces: list[Ns]) -> ContainerObserved:
    sections = _sections(text)
    sums = {}
    for line in sections.get(("files", ""), []):
        digest, _, path = line.partition("  ")
        sums[path] = digest
    observed = ContainerObserved(key, "running")
    observed.netns = frozenset(n.strip() for n in sections.get(("netns", ""), []) if n.strip())
    observed.files = {op.path: sums.get(op.path) for op in ops if isinstance(op, WriteFile)}
    if ("iptables", "") in sections:
        observed.iptables = "\n".join(sections[("iptables", "")]) + "\n"
    if ("ipsets", "") in sections:
        observed.ipsets = "\n".join(sections[("ipsets", "")]) + "\n"
    if ("nftables", "") in sections:
        observed.nftables = "\n".join(sections[("nftables", "")]) + "\n"
    observed.processes = {
        words[1]: words[0] == "up"
        for words in (line.split(None, 1) for line in sections.get(("processes", ""), []))
        if len(words) == 2
    }
    for ns in namespaces:
        label = ns.netns or "-"
        if ("links", label) not in sections:
            continue  # a missing pod netns is one difference, not one per link inside it
        details, addrs = _json(sections[("links", label)]), _json(sections.get(("addrs", label), []))
        observed.namespaces[ns] = NsObserved(
            parse_links(details),
            parse_addresses(addrs),
            parse_routes(_json(sections.get(("routes", label), []))),
            parse_link_local(addrs, details),
        )
    return observed


def namespaces_by_container(plan: Plan) -> dict[str, list[Ns]]:
    """The namespaces inside each container that the plan touches: its own, and its pods'. One
    walk over the plan for the whole lab (a 1000-pod plan holds tens of thousands of operations)."""
    found: dict[str, set[Ns]] = {c.key: {Ns(c.key)} for c in plan.containers}
    for _, op in plan.ops():
        for ns in (op.ns, getattr(op, "peer_ns", None)):
            if ns is not None:
                found.setdefault(ns.container, {Ns(ns.container)}).add(ns)
    return {key: sorted(spaces, key=lambda ns: ns.netns or "") for key, spaces in found.items()}


def namespaces_of(plan: Plan, key: str) -> list[Ns]:
    return namespaces_by_container(plan).get(key, [Ns(key)])


def observe(handle: LabHandle, plan: Plan) -> dict[str, ContainerObserved]:
    """Every container of the plan, read in parallel: one entered process each."""
    infos = handle.containers
    spaces = namespaces_by_container(plan)

    def one(key: str) -> ContainerObserved:
        info = infos.get(key)
        if info is None or not info.running:
            return ContainerObserved(key, info.state if info else "missing")
        ops = [op for op in plan.steps.get(key, ()) if op.ns.container == key]
        output = handle.enter(key, ["sh", "-c", state_script(ops, spaces[key])]).output
        return parse_state(key, output, ops, spaces[key])

    return in_threads(one, [c.key for c in plan.containers])
