"""kindnet: the CNI ptp plugin with host-local IPAM, host-gw routes between nodes and kindnet's
masquerade agent (seeds 000, 002; REFERENCE.md "kind / kindnet").

No bridge. Per pod, as the ptp plugin does it:
- a veth `veth<hex>` on the node, `eth0` in the pod netns; the node side holds the pod
  gateway as a /32 (`10.244.1.1/32` on every pod veth of the node, so the pod's ARP for its
  gateway is answered) and a host route to the pod: `10.244.1.2 dev vethXXXX scope host`;
- in the pod, the address keeps its /24, but the kernel's `10.244.1.0/24 dev eth0` route is
  replaced so that even same-node pods are reached through the gateway:
  `10.244.1.1 dev eth0 scope link src 10.244.1.2`, `10.244.1.0/24 via 10.244.1.1 dev eth0
  src 10.244.1.2`, `default via 10.244.1.1 dev eth0` (seed 002).

The plugin deletes the kernel route and adds its own; here a `route replace` of the same
destination does it in one step (same table, tos and metric: the kernel swaps the route).

Between nodes: `otherPodCIDR via otherNodeIP dev eth0` on every node (cni.routes: nodes, what
kindnetd programs), or the lab router's routes (cni.routes: router).

Masquerade: kindnetd's ip-masq-agent — nat chain KIND-MASQ-AGENT, jumped to from POSTROUTING
for non-LOCAL destinations, RETURN for the cluster pod CIDR and MASQUERADE for the rest.
"""

from __future__ import annotations

from labbuilder.compile.cni.common import conf_json, host_local_files, host_routes, pod_link
from labbuilder.compile.cni.mode import CniMode
from labbuilder.compile.netfilter import Table, comment
from labbuilder.compile.ops import Address, LinkUp, Ns, Op, Route, WriteFile
from labbuilder.spec.model import Lab, Node

NETWORK = "kindnet"  # CNI network name: the conflist's `name`, host-local's state folder
CONF_PATH = "/etc/cni/net.d/10-kindnet.conflist"
IPAM_DIR = "/run/cni-ipam-state"  # kindnet's host-local dataDir
MASQ_CHAIN = "KIND-MASQ-AGENT"


def links(lab: Lab, node: Node) -> list[Op]:
    ops: list[Op] = host_routes(lab, node)
    if node.pod_cidr is None:
        return ops
    here = Ns(node.name)
    gateway = node.pod_gateway
    ops.append(WriteFile(here, CONF_PATH, conf_json(kindnet_conf(lab, node))))
    for pod in node.pods:
        pod_ns = Ns(node.name, pod.netns)
        ops += pod_link(lab, pod)
        ops += [
            LinkUp(here, pod.host_veth),
            Address(here, pod.host_veth, f"{gateway}/32"),
            Route(here, str(pod.ip), dev=pod.host_veth, scope="host"),
            Route(pod_ns, str(gateway), dev="eth0", scope="link", src=str(pod.ip)),
            # Replaces the kernel's `podCIDR dev eth0 proto kernel` route (same key).
            Route(pod_ns, str(node.pod_cidr), via=str(gateway), dev="eth0", src=str(pod.ip)),
            Route(pod_ns, "default", via=str(gateway), dev="eth0"),
        ]
    ops += host_local_files(lab, node, network=NETWORK, data_dir=IPAM_DIR)
    return ops


def kindnet_conf(lab: Lab, node: Node) -> dict[str, object]:
    """/etc/cni/net.d/10-kindnet.conflist as kindnetd writes it: ptp + host-local, then portmap."""
    return {
        "cniVersion": "0.3.1",
        "name": NETWORK,
        "plugins": [
            {
                "type": "ptp",
                "ipMasq": False,
                "ipam": {
                    "type": "host-local",
                    "dataDir": IPAM_DIR,
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "ranges": [[{"subnet": str(node.pod_cidr)}]],
                },
                "mtu": lab.cni.mtu,
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def masquerade(lab: Lab, node: Node) -> list[Table]:
    """kindnetd's ip-masq-agent, on every node (it is a DaemonSet), unless ipMasq is off."""
    del node
    if not lab.cni.ip_masq:
        return []
    nat = Table("nat")
    nat.add(
        "POSTROUTING",
        "-m addrtype ! --dst-type LOCAL "
        + comment(
            "kind-masq-agent: ensure nat POSTROUTING directs all non-LOCAL destination traffic "
            f"to our custom {MASQ_CHAIN} chain"
        )
        + f" -j {MASQ_CHAIN}",
    )
    nat.add(
        MASQ_CHAIN,
        f"-d {lab.cluster.pod_cidr} {comment('kind-masq-agent: local traffic is not subject to MASQUERADE')} -j RETURN",
    )
    nat.add(
        MASQ_CHAIN,
        comment("kind-masq-agent: outbound traffic is subject to MASQUERADE (must be last in chain)")
        + " -j MASQUERADE",
    )
    return [nat]


MODE = CniMode("ptp", links, masquerade, pod_bridge=lambda lab: None)
