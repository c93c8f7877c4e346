"""kube-proxy's mode object: the one place that answers "which rules does kube-proxy write here".

iptables mode: its nat and filter tables, merged with the CNI mode's own rules into one
iptables-restore per node. nftables mode: the CNI mode's iptables rules alone, and kube-proxy's
table `ip kube-proxy` in one `nft -f`. Nothing outside this module asks `proxy_mode ==`.
"""

from __future__ import annotations

from collections.abc import Iterable

from labbuilder.compile.kubeproxy.nftables import NftProxy
from labbuilder.compile.kubeproxy.rules import kube_proxy_tables, per_node
from labbuilder.compile.netfilter import Restore, Table
from labbuilder.compile.ops import Iptables, Nftables, Ns, Op
from labbuilder.spec.model import Lab, Node


class KubeProxy:
    """Computed once per plan: kube-proxy's rules are the same on every node but for a detail."""

    def __init__(self, lab: Lab, first: Iterable[Table] = ()):
        """`first`: tables whose rules go ahead of kube-proxy's in the same iptables-restore
        (kube-router's jumps, which it inserts at position 1 of the builtin chains)."""
        self.mode = lab.proxy_mode
        self.lab = lab
        self.first = list(first)
        self.nft: NftProxy | None = NftProxy(lab) if self.mode == "nftables" else None
        # iptables mode: the same tables on every node unless a Local policy makes them differ
        shared = self.nft is None and not per_node(lab)
        self.restore: Restore = Restore([*self.first, *(kube_proxy_tables(lab) if shared else ())])

    def _restore(self, node: Node) -> Restore:
        """kube-proxy's iptables tables on `node` (none in nftables mode), after `first`."""
        if self.nft is not None or not per_node(self.lab):
            return self.restore
        return Restore([*self.first, *kube_proxy_tables(self.lab, node)])

    def ops(self, node: Node, cni: list[Table]) -> list[Op]:
        """A node's rules: one iptables-restore (kube-proxy's tables first, as kube-proxy prepends
        its jumps, then the CNI mode's), and in nftables mode kube-proxy's own table."""
        ns = Ns(node.name)
        ops: list[Op] = [Iptables(ns, self._restore(node).render(cni))]
        if self.nft is not None:
            ops.append(Nftables(ns, self.nft.table.family, self.nft.table.name, self.nft.payload(node)))
        return ops
