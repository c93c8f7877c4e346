"""The shell a fresh container runs to make its plan true: few processes, whole batches.

A new container holds nothing yet, so its operations can run as plain commands without the
ensure-semantics of netlink: pod namespaces (one `ip -batch`), then one `ip -batch` (or `bridge
-batch`) for the container's links, one per pod namespace for its links and routes, one for the
container's routes, then kube-router's `ipset restore` (the sets
the rules match on must exist first), then one `iptables-restore` of whole tables (and one
`nft -f` of kube-proxy's table in its nftables mode).
Grouping keeps every dependency the plan's order has: the container's own links go first (they
make the veths whose peers the pod namespaces then configure), a pod's routes follow its own
addresses, and the container's routes come after all links and addresses, as `PHASES` says.
Pure: `engine.apply` writes it into the container and runs it.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from labbuilder.compile.kubelet import agent_collect, agent_submit
from labbuilder.compile.ops import AddNetns, Command, Op, Phase, by_phase
from labbuilder.compile.paths import IPSETS_FILE, NFT_FILE, RULES_FILE, START_SCRIPT


def batches(ops: Sequence[Command]) -> list[tuple[str, str | None, list[str]]]:
    """(tool, netns, lines): the container's namespace first, then pods' in order of appearance."""
    groups: dict[tuple[str, str | None], list[str]] = {}
    first: dict[str | None, int] = {}
    for i, op in enumerate(ops):
        netns = op.ns.netns  # type: ignore[attr-defined]
        first.setdefault(netns, i)
        groups.setdefault((op.tool, netns), []).append(op.args())
    order = sorted(groups, key=lambda k: (k[1] is not None, first[k[1]], k[0] != "ip"))
    return [(tool, netns, groups[(tool, netns)]) for tool, netns in order]


def _batch(tool: str, netns: str | None, lines: list[str]) -> str:
    where = f" -n {shlex.quote(netns)}" if netns else ""
    return f"{tool}{where} -batch - <<'EOF'\n" + "\n".join(lines) + "\nEOF"


def build_script(
    key: str, ops: Sequence[Op], rules: bool, ipsets: bool = False, nft: bool = False, start: bool = False
) -> str:
    """The commands for container `key`'s own operations (those made from another container's
    side, the uplink veths, are not in it); at the end, as flagged: restore IPSETS_FILE, then
    RULES_FILE, then load NFT_FILE (kube-proxy's table, one transaction). With `start`, START_SCRIPT
    (the node's processes) goes to the node's agent right after the pod namespaces exist, and the
    script ends when the agent has run it."""
    phases = by_phase(op for op in ops if op.ns.container == key)
    lines = ["set -e"]
    names = [op.ns.netns for op in phases[Phase.NETNS] if isinstance(op, AddNetns) and op.ns.netns]
    if names:  # one `ip` for all of them: a process each cost ≈2 ms more per pod
        lines.append(_batch("ip", None, [f"netns add {name}" for name in names]))
    if start:
        # The processes start now, and come up while the links, routes and rules are made: they
        # bind their pods' wildcard addresses, which need only the namespaces (`up` returns once
        # all of it is done and every socket listens).
        lines.append(agent_submit(START_SCRIPT))
    links = [op for op in phases[Phase.LINKS] if isinstance(op, Command)]
    routes = [op for op in phases[Phase.ROUTES] if isinstance(op, Command)]
    # The container's own links (they make the veths into the pods), then each pod's links and
    # routes in one batch (a pod's routes need only its own addresses), then the container's
    # own routes (gateways and pod routes over links that all exist by then).
    pods = [op for op in [*links, *routes] if op.ns.netns]
    for group in (
        [op for op in links if not op.ns.netns],
        pods,
        [op for op in routes if not op.ns.netns],
    ):
        lines += [_batch(tool, netns, batch) for tool, netns, batch in batches(group)]
    if ipsets:
        lines.append(f"ipset restore -exist -file {IPSETS_FILE}")
    if rules:
        lines.append(f"iptables-restore {RULES_FILE}")
    if nft:
        lines.append(f"nft -f {NFT_FILE}")
    if start:
        lines.append(agent_collect())
    return "\n".join(lines) + "\n"
