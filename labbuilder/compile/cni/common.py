"""Pieces every CNI mode shares: the pod's veth into its netns, host-local state, host-gw routes."""

from __future__ import annotations

import json

from labbuilder.compile.ops import AddNetns, Address, LinkUp, Ns, Op, Route, Veth, WriteFile
from labbuilder.spec.addressing import hashed_mac
from labbuilder.spec.model import Lab, Node, Pod


def pod_link(lab: Lab, pod: Pod, mac: str | None = None, mtu: int | None = None) -> list[Op]:
    """Create the pod netns and its veth: made in the node, `eth0` placed straight in the pod."""
    node, pod_ns = Ns(pod.node), Ns(pod.node, pod.netns)
    return [
        AddNetns(pod_ns),
        Veth(
            node,
            pod.host_veth,
            pod_ns,
            "eth0",
            mac=hashed_mac(lab.name, "veth", pod.ref),
            peer_mac=mac or hashed_mac(lab.name, "pod", pod.ref),
            mtu=mtu or lab.cni.mtu,
        ),
        LinkUp(pod_ns, "lo"),
        Address(pod_ns, "eth0", f"{pod.ip}/{lab.node(pod.node).pod_cidr.prefixlen}"),  # type: ignore[union-attr]
        LinkUp(pod_ns, "eth0"),
    ]


def host_local_files(
    lab: Lab, node: Node, network: str | None = None, data_dir: str = "/var/lib/cni/networks"
) -> list[Op]:
    """host-local IPAM state: one file per allocated IP holding the container id and ifname.

    `network` and `data_dir` default to the bridge plugin's; kindnet keeps its state in
    /run/cni-ipam-state/kindnet, flannel in /var/lib/cni/networks/cbr0.
    """
    base = f"{data_dir}/{network or lab.cni.network_name}"
    here = Ns(node.name)
    ops: list[Op] = [WriteFile(here, f"{base}/{pod.ip}", f"{pod.container_id}\neth0") for pod in node.pods]
    if node.pods:
        ops.append(WriteFile(here, f"{base}/last_reserved_ip.0", str(node.pods[-1].ip)))
    return ops


def host_routes(lab: Lab, node: Node) -> list[Op]:
    """host-gw: `otherPodCIDR via otherNodeIP` on every node (seed 002), when routes: nodes."""
    if lab.cni.routes != "nodes":  # host-gw is for routing modes: vxlan never calls this
        return []
    here = Ns(node.name)
    return [
        Route(here, str(other.pod_cidr), via=str(other.ip), dev="eth0")
        for other in lab.nodes
        if other.name != node.name and other.pod_cidr is not None
    ]


def conf_json(conf: dict[str, object]) -> str:
    return json.dumps(conf, indent=2) + "\n"
