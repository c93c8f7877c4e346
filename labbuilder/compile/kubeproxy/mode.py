"""kube-proxy's mode object: the one place that answers "which rules does kube-proxy write here".

iptables mode: its nat and filter tables, merged with the CNI mode's own rules into one
iptables-restore per node. nftables mode: the CNI mode's iptables rules alone, and kube-proxy's
table `ip kube-proxy` in one `nft -f`. Nothing outside this module asks `proxy_mode ==`.
"""

from __future__ import annotations

from collections.abc import Sequence

from labbuilder.compile.kubeproxy.nftables import NftProxy
from labbuilder.compile.kubeproxy.rules import kube_proxy_tables, per_node
from labbuilder.compile.netfilter import Restore, Table
from labbuilder.compile.ops import Iptables, Nftables, Ns, Op
from labbuilder.spec.model import Lab, Node


class KubeProxy:
    """Computed once per plan: kube-proxy's rules are the same on every node but for a detail."""

    def __init__(self, lab: Lab, first: Sequence[Table] = ()):
        """`first`: iptables rules that go before kube-proxy's on every node (kube-router's jumps)."""
        self.mode = lab.proxy_mode
        self.lab = lab
        self.first = list(first)
        self.nft: NftProxy | None = NftProxy(lab) if self.mode == "nftables" else None
        # the same iptables tables on every node unless a Local policy makes them differ
        shared = self.nft is not None or not per_node(lab)
        self.restore: Restore | None = Restore(self._tables()) if shared else None

    def _tables(self, node: Node | None = None) -> list[Table]:
        """kube-proxy's iptables tables (none in nftables mode), after `first`."""
        if self.nft is not None:
            return self.first
        return [*self.first, *kube_proxy_tables(self.lab, node)]

    def ops(self, node: Node, own: list[Table]) -> list[Op]:
        """A node's rules: one iptables-restore (kube-proxy's tables first, as kube-proxy prepends
        its jumps, then the node's own: the CNI mode's, kube-router's pod firewalls), and in
        nftables mode kube-proxy's own table."""
        ns = Ns(node.name)
        restore = self.restore or Restore(self._tables(node))
        ops: list[Op] = [Iptables(ns, restore.render(own))]
        if self.nft is not None:
            ops.append(Nftables(ns, self.nft.table.family, self.nft.table.name, self.nft.payload(node)))
        return ops
