"""The CNI bridge plugin with host-local IPAM and ipMasq, as Kubernetes The Hard Way runs it (seed 004).

Per node: bridge `cnio0` holding the podCIDR's .1; per pod a veth `veth<hex>` on the bridge
with `eth0` in the pod netns, `default via .1`; per pod a `CNI-<hash>` nat chain when ipMasq.
"""

from __future__ import annotations

import hashlib

from labbuilder.compile.cni.common import conf_json, host_local_files, host_routes, pod_link
from labbuilder.compile.cni.mode import CniMode
from labbuilder.compile.netfilter import Table
from labbuilder.compile.ops import Address, Bridge, Hairpin, LinkUp, Master, Ns, Op, Route, WriteFile
from labbuilder.spec.addressing import ip_mac
from labbuilder.spec.model import Lab, Node


def links(lab: Lab, node: Node) -> list[Op]:
    ops: list[Op] = host_routes(lab, node)
    if node.pod_cidr is None:
        return ops
    here = Ns(node.name)
    bridge, gateway = lab.cni.bridge, node.pod_gateway
    ops += [
        Bridge(here, bridge, mac=ip_mac(gateway), mtu=lab.cni.mtu),
        Address(here, bridge, f"{gateway}/{node.pod_cidr.prefixlen}"),
        LinkUp(here, bridge),
        WriteFile(here, "/etc/cni/net.d/10-bridge.conf", conf_json(bridge_conf(lab, node))),
        WriteFile(
            here,
            "/etc/cni/net.d/99-loopback.conf",
            conf_json({"cniVersion": lab.cni.cni_version, "name": "lo", "type": "loopback"}),
        ),
    ]
    for pod in node.pods:
        ops += pod_link(lab, pod, mac=ip_mac(pod.ip))
        ops += [
            Master(here, pod.host_veth, bridge),
            *([Hairpin(here, pod.host_veth)] if lab.cni.hairpin else []),
            LinkUp(here, pod.host_veth),
            Route(Ns(node.name, pod.netns), "default", via=str(gateway), dev="eth0"),
        ]
    ops += host_local_files(lab, node)
    return ops


def bridge_conf(lab: Lab, node: Node) -> dict[str, object]:
    return {
        "cniVersion": lab.cni.cni_version,
        "name": lab.cni.network_name,
        "type": "bridge",
        "bridge": lab.cni.bridge,
        "isGateway": True,
        "ipMasq": lab.cni.ip_masq,
        **({"hairpinMode": True} if lab.cni.hairpin else {}),
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": str(node.pod_cidr)}]],
            "routes": [{"dst": "0.0.0.0/0"}],
        },
    }


def masq_chain(network: str, container_id: str) -> str:
    """The bridge plugin's per-pod chain: CNI- + 24 hex of sha512(network name + container id)."""
    return "CNI-" + hashlib.sha512((network + container_id).encode()).hexdigest()[:24]


def masquerade(lab: Lab, node: Node) -> list[Table]:
    if not lab.cni.ip_masq or node.pod_cidr is None:
        return []
    nat = Table("nat")
    for pod in node.pods:
        chain = masq_chain(lab.cni.network_name, pod.container_id)
        comment = f'-m comment --comment "name: \\"{lab.cni.network_name}\\" id: \\"{pod.container_id}\\""'
        # The 2018 plugin matched the pod's whole subnet as source; current ones the pod /32.
        source = str(node.pod_cidr) if lab.proxy_style == "2018" else f"{pod.ip}/32"
        nat.add("POSTROUTING", f"-s {source} {comment} -j {chain}")
        nat.add(chain, f"-d {node.pod_cidr} {comment} -j ACCEPT")
        nat.add(chain, f"! -d 224.0.0.0/4 {comment} -j MASQUERADE")
    return [nat]


MODE = CniMode("bridge", links, masquerade, pod_bridge=lambda lab: lab.cni.bridge, masquerades_pods=True)
