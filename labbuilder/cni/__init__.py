"""CNI modes: what each node gets beyond its uplink — pod links, node routes, masquerade, files.

Each mode module offers `links(lab, node)` (operations) and `masquerade(lab, node)` (netfilter
tables); `steps_for_node` adds the node's iptables payload and its processes.
"""

from __future__ import annotations

import json
from typing import Protocol

from labbuilder.model import Lab, Node, Pod
from labbuilder.netfilter import Table, merge, render_restore
from labbuilder.plan import Iptables, Ns, Op, Process


class Mode(Protocol):
    def links(self, lab: Lab, node: Node) -> list[Op]: ...
    def masquerade(self, lab: Lab, node: Node) -> list[Table]: ...


def mode_for(lab: Lab) -> Mode:
    from labbuilder.cni import bridge

    modes: dict[str, Mode] = {"bridge": bridge}
    return modes[lab.cni.mode]


def steps_for_node(lab: Lab, node: Node) -> list[Op]:
    from labbuilder.kubeproxy import kube_proxy_tables

    mode = mode_for(lab)
    tables = merge([*mode.masquerade(lab, node), *kube_proxy_tables(lab, node)])
    return [
        *mode.links(lab, node),
        Iptables(Ns(node.name), render_restore(tables.values())),
        *processes(node),
    ]


def processes(node: Node) -> list[Op]:
    """Pods: a pause process holding the netns and the workload answering on its ports.

    Node-level servers (the apiserver's :6443 on controllers) run in the node's own netns.
    """
    ops: list[Op] = []
    for pod in node.pods:
        ns = Ns(node.name, pod.netns)
        ops.append(Process(ns, f"{pod.name}.pause", ("/pause", "infinity")))
        if pod.ports:
            ops.append(Process(ns, pod.name, podserver_argv(pod)))
    if node.listen_ports:
        argv = ["podserver", "--name", node.name, "--ip", str(node.ip)]
        for port in node.listen_ports:
            argv += ["--tcp", str(port)]
        ops.append(Process(Ns(node.name), f"{node.name}.server", tuple(argv)))
    return ops


def podserver_argv(pod: Pod) -> tuple[str, ...]:
    argv = ["podserver", "--name", pod.name, "--ip", str(pod.ip)]
    for port in pod.ports:
        argv += ["--udp" if port.protocol == "UDP" else "--tcp", str(port.port)]
    return tuple(argv)


def conf_json(conf: dict[str, object]) -> str:
    return json.dumps(conf, indent=2) + "\n"
