"""Apply a container's planned operations, phase by phase (`ops.PHASES`), with few round trips.

Within one container: pod netns (one exec), links and addresses, then routes (pyroute2, sockets
opened inside each namespace by path), files and the iptables payload (one archive),
iptables-restore (one exec), processes (one exec). Each phase is idempotent, so applying twice
converges; reset applies the same phases after it has pruned what the plan does not hold.
"""

from __future__ import annotations

from collections.abc import Sequence

from labbuilder.compile import kubelet
from labbuilder.compile.ops import (
    AddNetns,
    Command,
    Ipsets,
    Iptables,
    Nftables,
    Ns,
    Op,
    Phase,
    Process,
    Veth,
    WriteFile,
    by_phase,
)
from labbuilder.compile.paths import BUILD_SCRIPT, IPSETS_FILE, NFT_FILE, RULES_FILE, START_SCRIPT, STATE_DIR
from labbuilder.compile.script import build_script
from labbuilder.engine.netlink import NetlinkOp
from labbuilder.engine.runtime import LabHandle, tar_of
from labbuilder.errors import LabError


def rule_files(phases: dict[Phase, list[Op]]) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """The IPSETS and RULES phases as files: kube-router's ipset restore payload, the
    iptables-restore payload, and kube-proxy's nft -f payload."""
    sets = [op.payload for op in phases[Phase.IPSETS] if isinstance(op, Ipsets)]
    rules = [op.payload for op in phases[Phase.RULES] if isinstance(op, Iptables)]
    nft = [op.payload for op in phases[Phase.RULES] if isinstance(op, Nftables)]
    return (
        {IPSETS_FILE: sets[-1]} if sets else {},
        {RULES_FILE: rules[-1]} if rules else {},
        {NFT_FILE: nft[-1]} if nft else {},
    )


class Applier:
    """Makes a plan's operations true in one lab, through its handle.

    Two ways, one result: `build` for a container this run created (it holds nothing, so its
    operations run as plain batched commands: one archive, one script, one process start), and
    `apply` for one that already exists (every operation *ensures* over netlink, so a second `up`
    or a crashed one converges).
    """

    def __init__(self, lab: LabHandle):
        self.lab = lab

    def uplinks(self, key: str, ops: Sequence[Op]) -> None:
        """Links that containers' plans make from container `key`'s side (the router's: the nodes'
        uplink veths), all in one `ip -batch` there. The host's own `ip` runs in that network
        namespace, so `netns PID` places each peer straight into its node, named by its pid."""
        lines = []
        for op in ops:
            assert isinstance(op, Command) and op.ns == Ns(key)
            if isinstance(op, Veth) and op.peer_ns.container != key and not op.peer_ns.netns:
                lines.append(op.args(peer_netns=str(self.lab.pid(op.peer_ns.container))))
            else:
                lines.append(op.args())
        if lines:
            self.lab.run(key, ["ip", "-batch", "-"], stdin="\n".join(lines).encode(), host_tools=True)

    def build(self, key: str, ops: Sequence[Op]) -> None:
        """A container this run created: its own operations in one script, its processes handed
        to its agent as soon as the pod namespaces exist; the links other containers make into
        it (`uplinks`) must be there already."""
        phases = by_phase(ops)
        files = {op.path: op.content for op in phases[Phase.FILES] if isinstance(op, WriteFile)}
        sets, rules, nft = rule_files(phases)
        files.update(sets | rules | nft)
        processes = [op for op in phases[Phase.PROCESSES] if isinstance(op, Process)]
        if processes:
            files[START_SCRIPT] = kubelet.start_script(processes)
        files[BUILD_SCRIPT] = build_script(
            key, ops, rules=bool(rules), ipsets=bool(sets), nft=bool(nft), start=bool(processes)
        )
        # One process on this host: the files arrive as a tar on stdin, then the script runs.
        self.lab.run(key, ["sh", "-c", f"tar -x -C / && sh {BUILD_SCRIPT}"], stdin=tar_of(files))

    def apply(self, key: str, ops: Sequence[Op]) -> None:
        phases = by_phase(ops)
        self.add_netns(key, phases[Phase.NETNS])
        steps = [op for op in [*phases[Phase.LINKS], *phases[Phase.ROUTES]] if isinstance(op, NetlinkOp)]
        self.lab.netlink(steps)
        files = {op.path: op.content for op in phases[Phase.FILES] if isinstance(op, WriteFile)}
        sets, rules, nft = rule_files(phases)
        files.update(sets | rules | nft)
        if files:
            self.lab.put_files(key, files)
        if sets:
            self.restore_ipsets(key)
        if rules:
            self.restore_rules(key)
        if nft:
            self.load_nftables(key)
        self.start_processes(key, [op for op in phases[Phase.PROCESSES] if isinstance(op, Process)])

    def restore_ipsets(self, key: str) -> None:
        """ipset restore of the payload already written to IPSETS_FILE: each set refilled and
        swapped in, so the sets hold exactly their planned entries again."""
        self.lab.run(key, ["ipset", "restore", "-exist", "-file", IPSETS_FILE])

    def restore_rules(self, key: str) -> None:
        """iptables-restore of the payload already written to RULES_FILE: whole tables, atomically."""
        self.lab.run(key, ["iptables-restore", RULES_FILE])

    def load_nftables(self, key: str) -> None:
        """nft -f of the payload already written to NFT_FILE: the whole table, in one transaction."""
        self.lab.run(key, ["nft", "-f", NFT_FILE])

    def add_netns(self, key: str, ops: Sequence[Op]) -> None:
        """Each pod netns once. A name under /run/netns that is not a live namespace (the mount
        did not survive a container restart) is made again."""
        names = [op.ns.netns for op in ops if isinstance(op, AddNetns) and op.ns.netns]
        if names:
            script = "\n".join(
                f"ip netns exec {n} true 2>/dev/null || {{ ip netns del {n} 2>/dev/null || true; rm -f /run/netns/{n}; "
                f"ip netns add {n}; }}"
                for n in names
            )
            self.lab.run(key, ["sh", "-ec", script])

    def start_processes(self, key: str, ops: list[Process]) -> list[str]:
        """Start each process that is not running; returns the names of those it started.

        The node's agent starts them (kubelet.through_agent): they live on inside the container's
        cgroup, with its capabilities, as with `docker exec` — which is what a node without an
        agent (made by an older labbuilder) gets instead."""
        if not ops:
            return []
        script = kubelet.start_script(ops)
        handover = f"mkdir -p {STATE_DIR} && cat > {START_SCRIPT}\n{kubelet.through_agent(START_SCRIPT)}"
        result = self.lab.enter(key, ["sh", "-c", handover], stdin=script.encode())
        if result.code == kubelet.NO_AGENT:
            return kubelet.started(self.lab.run(key, ["sh", "-ec", script], entered=False))
        if result.code != 0:
            raise LabError(f"lab {self.lab.name}: starting processes in {key} failed ({result.code}): {result.output}")
        return kubelet.started(result.output)
