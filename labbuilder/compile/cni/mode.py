"""The CNI mode object: the one place that answers every question whose answer depends on the mode.

Nothing outside `compile/cni/` tests `mode == …`: the planner asks a mode for a node's links and
masquerade tables, the graph asks it which bridge the pods hang on and what carries traffic
between nodes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from labbuilder.compile.netfilter import Table
from labbuilder.compile.ops import Op
from labbuilder.spec.model import Lab, Node


@dataclass(frozen=True)
class CniMode:
    name: str
    links: Callable[[Lab, Node], list[Op]]  # a node's pod links, node routes and CNI files
    masquerade: Callable[[Lab, Node], list[Table]]  # the mode's own nat/filter rules on a node
    pod_bridge: Callable[[Lab], str | None]  # the bridge a node's pods hang on; None: ptp links
    overlay: str | None = None  # what carries pod traffic between nodes, when it is not routing
    # ipMasq reaches pod-to-pod traffic between nodes too: the bridge plugin exempts only its own
    # node's subnet (kindnet and flannel exempt the whole cluster podCIDR).
    masquerades_pods: bool = False

    def hides_pod_sources(self, lab: Lab) -> bool:
        """Pods on other nodes arrive as their node's address: selectors cannot match them."""
        return self.masquerades_pods and lab.cni.ip_masq

    def router_routes(self, lab: Lab) -> bool:
        """The lab router holds a route per podCIDR (the VPC routes of KTHW)."""
        return lab.cni.routes == "router" and self.overlay is None

    def node_routes(self, lab: Lab) -> bool:
        """Every node holds `otherPodCIDR via otherNodeIP` (host-gw)."""
        return lab.cni.routes == "nodes" and self.overlay is None

    def between_nodes(self, lab: Lab) -> str:
        """How pod traffic crosses nodes, in a few words (the graph's legend)."""
        if self.overlay:
            return self.overlay
        return "pod routes in the router" if self.router_routes(lab) else "pod routes on the nodes (host-gw)"
