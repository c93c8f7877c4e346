"""CNI modes: what each node gets beyond its uplink — pod links, node routes, masquerade, files.

Each mode module offers `links(lab, node)` (operations) and `masquerade(lab, node)` (netfilter
tables); `steps_for_node` adds the node's iptables payload and what the kubelet does (kubelet.py).
"""

from __future__ import annotations

import json
from typing import Protocol

from labbuilder.model import Lab, Node
from labbuilder.netfilter import Table, merge, render_restore
from labbuilder.plan import Iptables, Ns, Op


class Mode(Protocol):
    def links(self, lab: Lab, node: Node) -> list[Op]: ...
    def masquerade(self, lab: Lab, node: Node) -> list[Table]: ...


def mode_for(lab: Lab) -> Mode:
    from labbuilder.cni import bridge, ptp, vxlan

    modes: dict[str, Mode] = {"bridge": bridge, "ptp": ptp, "vxlan": vxlan}
    return modes[lab.cni.mode]


def steps_for_node(lab: Lab, node: Node) -> list[Op]:
    from labbuilder import kubelet
    from labbuilder.kubeproxy import kube_proxy_tables

    mode = mode_for(lab)
    # kube-proxy prepends its POSTROUTING jump: its hairpin masquerade must run before the CNI ACCEPTs.
    tables = merge([*kube_proxy_tables(lab, node), *mode.masquerade(lab, node)])
    return [
        *mode.links(lab, node),
        Iptables(Ns(node.name), render_restore(tables.values())),
        *kubelet.resolv_files(lab, node),
        *kubelet.pod_processes(lab, node),
    ]


def conf_json(conf: dict[str, object]) -> str:
    return json.dumps(conf, indent=2) + "\n"
