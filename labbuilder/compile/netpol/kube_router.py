"""kube-router's network-policy datapath as data: the ipsets and filter-table chains a node holds.

Written the way kube-router v2's controller writes them in one full sync (pkg/controllers/netpol:
`syncNetworkPolicyChains`, `syncPodFirewallChains`, `ensureTopLevelChains`,
`ensureDefaultNetworkPolicyChain`, `ensureExplicitAccept`), in the form `iptables-save` prints
them, so a node's saved table compares equal without normalising:

- every node: `KUBE-ROUTER-INPUT/FORWARD/OUTPUT` jumped to first from INPUT/FORWARD/OUTPUT,
  `KUBE-NWPLCY-DEFAULT` (ICMP, then the 0x10000 mark), one `KUBE-NWPLCY-` chain per policy over
  `KUBE-SRC-`/`KUBE-DST-` ipsets, and the ipsets themselves (the same on every node);
- per node: one `KUBE-POD-FW-` chain per local pod (conntrack, the node's own traffic, the
  policies or the default chain per direction, NFLOG + REJECT of what no policy marked, the
  0x20000 mark), the jumps to it (routed and `--physdev-is-bridged`), and the explicit ACCEPT of
  0x20000 at the end of each top-level chain.

What differs from a running kube-router: one sync at a fixed syncVersion (`names.SYNC_VERSION`),
policies and pods in the lab file's order instead of an informer's, a named port's numbers
sorted. Pure: `plan` turns it into operations.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Network

from labbuilder.compile.netfilter import Table, comment
from labbuilder.compile.netpol import names
from labbuilder.compile.netpol.ipset import HASH_IP, HASH_NET, IpSet, restore
from labbuilder.compile.netpol.semantics import peer_pods, selected_pods
from labbuilder.spec.model import Lab, NetworkPolicy, Node, Pod, PolicyPeer, PolicyPort, PolicyRule

NODE_PORT_RANGE = "30000:32767"  # --service-node-port-range, as validateNodePortRange writes it
# utils.CommonICMPRules for IPv4: what KUBE-NWPLCY-DEFAULT lets through before marking.
_ICMP = (
    (8, "allow icmp echo requests"),
    (3, "allow icmp destination unreachable messages"),
    (11, "allow icmp time exceeded messages"),
)


@dataclass(frozen=True)
class Ports:
    """A rule's ports as processNetworkPolicyPorts splits them: numbers (protocol, port, end port),
    and named ports resolved to one entry per (protocol, number) with the pods that have it."""

    numeric: tuple[tuple[str, str, str], ...]
    named: tuple[tuple[str, str, tuple[Pod, ...]], ...]


@dataclass(frozen=True)
class KubeRouter:
    """A lab's kube-router datapath: what every node holds, and `node_tables` for each node's own."""

    lab: Lab
    ipsets: tuple[IpSet, ...]
    shared: tuple[Table, ...]  # the filter table's rules common to every node
    targets: dict[str, frozenset[str]]  # policy ref → refs of the pods it selects (its targetPods)

    @property
    def restore(self) -> str:
        return restore(self.ipsets)

    def node_tables(self, node: Node) -> list[Table]:
        return [pod_firewalls(self.lab, node, self.targets)]


def kube_router(lab: Lab) -> KubeRouter | None:
    """The lab's kube-router datapath; None for a lab without network policies (kube-router's
    chains would let everything through: the lab keeps kube-proxy's filter table alone)."""
    if not lab.network_policies:
        return None
    table = Table("filter")
    top_level(lab, table)
    default_chain(table)
    sets: dict[str, IpSet] = {}
    for policy in lab.network_policies:
        policy_chain(lab, policy, table, sets)
    targets = {p.ref: frozenset(pod.ref for pod in selected_pods(lab, p)) for p in lab.network_policies}
    return KubeRouter(lab, tuple(sets.values()), (table,), targets)


# ---- every node: top-level chains, the default chain, one chain per policy -----------------------


def top_level(lab: Lab, table: Table) -> None:
    """ensureTopLevelChains: the jumps from the builtin chains and KUBE-ROUTER-INPUT's whitelist.
    Each rule's comment ends with kube-router's hash of the rule (`names.with_uuid`)."""
    for builtin, chain in names.TOP_LEVEL.items():
        table.chain(chain)
        spec = names.with_uuid(builtin, ["-m", "comment", "--comment", "kube-router netpol", "-j", chain])
        table.add(builtin, f"{comment(spec[3])} -j {chain}")
    cidr = str(lab.cluster.service_cidr)
    text = "allow traffic to primary/secondary cluster IP range"
    spec = names.with_uuid(names.INPUT, ["-m", "comment", "--comment", text, "-d", cidr, "-j", "RETURN"])
    table.add(names.INPUT, f"-d {cidr} {comment(spec[3])} -j RETURN")
    for proto in ("tcp", "udp"):
        text = f"allow LOCAL {proto.upper()} traffic to node ports"
        spec = ["-p", proto, "-m", "comment", "--comment", text, "-m", "addrtype", "--dst-type", "LOCAL"]
        spec = names.with_uuid(names.INPUT, [*spec, "-m", "multiport", "--dports", NODE_PORT_RANGE, "-j", "RETURN"])
        ports = f"-m addrtype --dst-type LOCAL -m multiport --dports {NODE_PORT_RANGE}"
        table.add(names.INPUT, f"-p {proto} {comment(spec[5])} {ports} -j RETURN")


def default_chain(table: Table) -> None:
    """ensureDefaultNetworkPolicyChain: what a pod no policy isolates in a direction passes."""
    for icmp_type, text in _ICMP:
        table.add(names.DEFAULT, f"-p icmp {comment(text)} -m icmp --icmp-type {icmp_type} -j ACCEPT")
    table.add(
        names.DEFAULT,
        f"{comment('rule to mark traffic matching a network policy')} -j MARK --set-xmark {names.MARK_MATCHED}",
    )


def policy_type(policy: NetworkPolicy) -> str:
    """kube-router's policyType: "ingress" (also when none is listed), "egress" or "both"."""
    ingress, egress = "Ingress" in policy.policy_types, "Egress" in policy.policy_types
    return "both" if ingress and egress else "egress" if egress else "ingress"


def policy_chain(lab: Lab, policy: NetworkPolicy, table: Table, sets: dict[str, IpSet]) -> None:
    """syncNetworkPolicyChains for one policy: its chain, its target sets, its rules."""
    chain = names.policy_chain(policy.namespace, policy.name)
    table.chain(chain)
    targets = selected_pods(lab, policy)
    kind = policy_type(policy)
    rules = _PolicyRules(lab, policy, chain, table, sets)
    if kind in ("both", "ingress"):
        dst = names.target_dst_set(policy.namespace, policy.name)
        _refresh(sets, dst, HASH_IP, _ip_entries(targets))
        for i, rule in enumerate(policy.ingress):
            rules.ingress(i, rule, dst, targets)
    if kind in ("both", "egress"):
        src = names.target_src_set(policy.namespace, policy.name)
        _refresh(sets, src, HASH_IP, _ip_entries(targets))
        for i, rule in enumerate(policy.egress):
            rules.egress(i, rule, src)


@dataclass
class _PolicyRules:
    """processIngressRules / processEgressRules: each case writes mark + return rules."""

    lab: Lab
    policy: NetworkPolicy
    chain: str
    table: Table
    sets: dict[str, IpSet]

    def ingress(self, i: int, rule: PolicyRule, dst: str, targets: tuple[Pod, ...]) -> None:
        ns, name = self.policy.namespace, self.policy.name
        ports = resolve_ports(rule.ports, targets)
        match_all_ports = not rule.ports
        from_pods = "rule to ACCEPT traffic from source pods to dest pods selected by policy name"
        from_all = "rule to ACCEPT traffic from all sources to dest pods selected by policy name:"
        from_blocks = "rule to ACCEPT traffic from specified ipBlocks to dest pods selected by policy name:"
        peers = _peer_pods(self.lab, self.policy, rule.peers)
        if peers:
            src = names.ingress_pod_set(ns, name, i)
            _refresh(self.sets, src, HASH_IP, _ip_entries(peers))
            self._ports(from_pods, src, dst, ports.numeric)
            for j, (proto, port, pods) in enumerate(ports.named):
                named = names.ingress_named_port_set(ns, name, i, j)
                _refresh(self.sets, named, HASH_IP, _ip_entries(pods))
                self.accept(from_pods, src, named, proto, port)
            if not ports.numeric and not ports.named:
                self.accept(from_pods, src, dst)
        if not rule.peers and not match_all_ports:
            self._ports(from_all, "", dst, ports.numeric)
            for j, (proto, port, pods) in enumerate(ports.named):
                named = names.ingress_named_port_set(ns, name, i, j)
                _refresh(self.sets, named, HASH_IP, _ip_entries(pods))
                self.accept(from_all, "", named, proto, port)
        if not rule.peers and match_all_ports:
            self.accept(from_all, "", dst)
        blocks = _block_entries(rule.peers)
        if blocks:
            src = names.ingress_block_set(ns, name, i)
            _refresh(self.sets, src, HASH_NET, blocks)
            if not match_all_ports:
                self._ports(from_blocks, src, dst, ports.numeric)
                for j, (proto, port, pods) in enumerate(ports.named):
                    named = names.ingress_named_port_set(ns, name, i, j)
                    _refresh(self.sets, named, HASH_NET, _ip_entries(pods))
                    self.accept(from_blocks, src, named, proto, port)
            else:
                self.accept(from_blocks, src, dst)

    def egress(self, i: int, rule: PolicyRule, src: str) -> None:
        ns, name = self.policy.namespace, self.policy.name
        match_all_ports = not rule.ports
        to_pods = "rule to ACCEPT traffic from source pods to dest pods selected by policy name"
        to_all = "rule to ACCEPT traffic from source pods to all destinations selected by policy name:"
        to_blocks = "rule to ACCEPT traffic from source pods to specified ipBlocks selected by policy name:"
        peers = _peer_pods(self.lab, self.policy, rule.peers)
        # Named ports of an egress rule resolve on its peers, or on every pod of the policy's
        # namespace when the rule names no peer.
        owners = peers if rule.peers else tuple(p for p in self.lab.pods if p.namespace == ns)
        ports = resolve_ports(rule.ports, owners)
        if peers:
            dst = names.egress_pod_set(ns, name, i)
            _refresh(self.sets, dst, HASH_IP, _ip_entries(peers))
            self._ports(to_pods, src, dst, ports.numeric)
            for j, (proto, port, pods) in enumerate(ports.named):
                named = names.egress_named_port_set(ns, name, i, j)
                _refresh(self.sets, named, HASH_IP, _ip_entries(pods))
                self.accept(to_pods, src, named, proto, port)
            if not ports.numeric and not ports.named:
                self.accept(to_pods, src, dst)
        if not rule.peers and not match_all_ports:
            self._ports(to_all, src, "", ports.numeric)
            for proto, port, _pods in ports.named:
                self.accept(to_all, src, "", proto, port)
        if not rule.peers and match_all_ports:
            self.accept(to_all, src, "")
        blocks = _block_entries(rule.peers)
        if blocks:
            dst = names.egress_block_set(ns, name, i)
            _refresh(self.sets, dst, HASH_NET, blocks)
            if not match_all_ports:
                self._ports(to_blocks, src, dst, ports.numeric)
            else:
                self.accept(to_blocks, src, dst)

    def _ports(self, text: str, src: str, dst: str, numeric: Iterable[tuple[str, str, str]]) -> None:
        for proto, port, end in numeric:
            self.accept(text, src, dst, proto, port, end)

    def accept(self, text: str, src: str, dst: str, proto: str = "", port: str = "", end: str = "") -> None:
        """appendRuleToPolicyChain: mark 0x10000, then RETURN what carries it."""
        full = f"{text} {self.policy.name} namespace {self.policy.namespace}"
        parts = [f"-p {proto.lower()}"] if proto else []
        parts.append(comment(full))
        parts += [f"-m set --match-set {src} src"] if src else []
        parts += [f"-m set --match-set {dst} dst"] if dst else []
        if port:
            parts.append(f"-m {proto.lower()} --dport {port}:{end}" if end else f"-m {proto.lower()} --dport {port}")
        match = " ".join(parts)
        self.table.add(self.chain, f"{match} -j MARK --set-xmark {names.MARK_MATCHED}")
        self.table.add(self.chain, f"{match} -m mark --mark {names.MARK_MATCHED} -j RETURN")


def resolve_ports(ports: Iterable[PolicyPort], owners: Iterable[Pod]) -> Ports:
    """processNetworkPolicyPorts: numbers as written; a named port becomes one entry per number
    the `owners` give it (grabNamedPortFromPod), with the pods that have that number."""
    numeric: list[tuple[str, str, str]] = []
    named: list[tuple[str, str, tuple[Pod, ...]]] = []
    owners = tuple(owners)
    for p in ports:
        if p.port is None:
            numeric.append((p.protocol, "", ""))
        elif isinstance(p.port, int):
            end = str(p.end_port) if p.end_port is not None and p.end_port >= p.port else ""
            numeric.append((p.protocol, str(p.port), end))
        else:
            by_number: dict[int, list[Pod]] = {}
            for pod in owners:
                for pp in pod.ports:
                    if pp.name == p.port and pp.protocol == p.protocol:
                        by_number.setdefault(pp.port, []).append(pod)
            named += [(p.protocol, str(n), tuple(by_number[n])) for n in sorted(by_number)]
    return Ports(tuple(numeric), tuple(named))


def _peer_pods(lab: Lab, policy: NetworkPolicy, peers: Iterable[PolicyPeer]) -> tuple[Pod, ...]:
    unique = {pod.ref: pod for peer in peers for pod in peer_pods(lab, policy, peer)}  # Pod holds a dict: not hashable
    return tuple(unique.values())


def _ip_entries(pods: Iterable[Pod]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(f"{pod.ip} timeout 0" for pod in pods))


def _halves(cidr: IPv4Network) -> list[str]:
    """evalIPBlockPeer: ipset cannot hold a /0, so 0.0.0.0/0 is written as its two halves."""
    return ["0.0.0.0/1", "128.0.0.0/1"] if cidr.prefixlen == 0 else [str(cidr)]


def _block_entries(peers: Iterable[PolicyPeer]) -> tuple[str, ...]:
    """evalIPBlockPeer: the cidr, then each except as `nomatch` (hash:net's longest match wins)."""
    out: list[str] = []
    for peer in peers:
        block = peer.ip_block
        if block is None or peer.pod_selector is not None or peer.namespace_selector is not None:
            continue
        out += [f"{c} timeout 0" for c in _halves(block.cidr)]
        out += [f"{c} timeout 0 nomatch" for e in block.except_ for c in _halves(e)]
    return tuple(out)


def _refresh(sets: dict[str, IpSet], name: str, kind: str, entries: tuple[str, ...]) -> None:
    """RefreshSet: the first creation fixes the type; the last refresh sets the entries."""
    first = sets.get(name)
    sets[name] = IpSet(name, first.kind if first else kind, entries)


# ---- per node: one firewall chain per local pod ------------------------------------------------


def pod_firewalls(lab: Lab, node: Node, targets: dict[str, frozenset[str]]) -> Table:
    """syncPodFirewallChains for `node`'s pods, then ensureExplicitAccept."""
    table = Table("filter")
    for pod in node.pods:
        pod_firewall(lab, pod, table, targets)
    text = comment("rule to explicitly ACCEPT traffic that comply to network policies")
    accept = f"{text} -m mark --mark {names.MARK_ACCEPT} -j ACCEPT"
    for chain in names.TOP_LEVEL.values():
        table.add(chain, accept)
    return table


def pod_firewall(lab: Lab, pod: Pod, table: Table, targets: dict[str, frozenset[str]]) -> None:
    chain = names.pod_chain(pod.namespace, pod.name)
    ip = f"{pod.ip}/32"
    table.chain(chain)
    for rule in pod_policy_rules(lab, pod, targets):
        table.add(chain, rule)
    # interceptPodInboundTraffic, interceptPodOutboundTraffic: routed and bridged traffic.
    to = comment(f"rule to jump traffic destined to POD name:{pod.name} namespace: {pod.namespace} to chain {chain}")
    frm = comment(f"rule to jump traffic from POD name:{pod.name} namespace: {pod.namespace} to chain {chain}")
    table.add(names.FORWARD, f"-d {ip} {to} -j {chain}")
    table.add(names.OUTPUT, f"-d {ip} {to} -j {chain}")
    table.add(names.FORWARD, f"-d {ip} -m physdev --physdev-is-bridged {to} -j {chain}")
    for top in names.TOP_LEVEL.values():
        table.add(top, f"-s {ip} {frm} -j {chain}")
    table.add(names.FORWARD, f"-s {ip} -m physdev --physdev-is-bridged {frm} -j {chain}")
    # dropUnmarkedTrafficRules, then the mark the top-level chains accept.
    unmarked = f"-m mark ! --mark {names.MARK_MATCHED}"
    who = f"POD name:{pod.name} namespace: {pod.namespace}"
    limit = f"-m limit --limit 10/min --limit-burst 10 -j NFLOG --nflog-group {names.NFLOG_GROUP}"
    table.add(chain, f"{comment(f'rule to log dropped traffic {who}')} {unmarked} {limit}")
    reject = "-j REJECT --reject-with icmp-port-unreachable"
    table.add(chain, f"{comment(f'rule to REJECT traffic destined for {who}')} {unmarked} {reject}")
    table.add(chain, "-j MARK --set-xmark 0x0/0x10000")
    passed = comment("set mark to ACCEPT traffic that comply to network policies")
    table.add(chain, f"{passed} -j MARK --set-xmark {names.MARK_ACCEPT}")


def pod_policy_rules(lab: Lab, pod: Pod, targets: dict[str, frozenset[str]]) -> list[str]:
    """setupPodNetpolRules. kube-router inserts each rule at position 1, so the chain reads in
    the reverse of the order it writes them: conntrack, the node itself, the default chain per
    unisolated direction, then the pod's policies last-first."""
    ip = f"{pod.ip}/32"
    written: list[str] = []
    ingress = egress = False
    for policy in lab.network_policies:
        if pod.ref not in targets[policy.ref]:
            continue
        jump = (
            f"{comment(f'run through nw policy {policy.name}')} -j {names.policy_chain(policy.namespace, policy.name)}"
        )
        kind = policy_type(policy)
        ingress |= kind in ("both", "ingress")
        egress |= kind in ("both", "egress")
        written.append(jump if kind == "both" else f"-d {ip} {jump}" if kind == "ingress" else f"-s {ip} {jump}")
    if not ingress:
        written.append(f"-d {ip} {comment('run through default ingress network policy chain')} -j {names.DEFAULT}")
    if not egress:
        written.append(f"-s {ip} {comment('run through default egress network policy chain')} -j {names.DEFAULT}")
    local = comment("rule to permit the traffic traffic to pods when source is the pod's local node")
    written.append(f"-d {ip} {local} -m addrtype --src-type LOCAL -j ACCEPT")
    written.append(f"{comment('rule to drop invalid state for pod')} -m conntrack --ctstate INVALID -j DROP")
    written.append(
        f"{comment('rule for stateful firewall for pod')} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    )
    return written[::-1]
