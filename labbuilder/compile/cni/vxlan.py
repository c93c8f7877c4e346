"""flannel with the vxlan backend (seed 002; REFERENCE.md "flannel, vxlan backend").

Per node (every node with a podCIDR runs flanneld):
- `flannel.1`: VXLAN id 1, UDP dstport 8472, local = node IP on eth0, nolearning, MTU = uplink
  MTU - 50 (1450), holding `10.244.X.0/32` — the node's subnet address, .0;
- per remote node Y, what flanneld programs from Y's lease, in flanneld's order: the
  neighbour `10.244.Y.0 lladdr <Y's VTEP MAC> dev flannel.1 PERMANENT`, the FDB entry
  `<Y's VTEP MAC> dev flannel.1 dst <Y's node IP> self permanent` and the route
  `10.244.Y.0/24 via 10.244.Y.0 dev flannel.1 onlink`;
- `/run/flannel/subnet.env` and `/etc/kube-flannel/net-conf.json`.
The VTEP MAC is random in flannel (published in the node's annotations); here it is derived
from the node's name and IP, so every node's plan can hold its peers' entries.

Pods: the flannel CNI plugin delegates to the bridge plugin — bridge `cni0` with the podCIDR's
.1, MTU 1450, isGateway and isDefaultGateway, hairpinMode (cni.hairpinMode), ipMasq off
(flanneld masquerades), and host-local routes to the cluster pod CIDR: in the pod `default via
.1`, `10.244.0.0/16 via .1` and the kernel's `/24 dev eth0`. As with the real plugin, `cni0`
appears with the first pod.

Masquerade: flanneld's FLANNEL-POSTRTG nat chain (inserted first in POSTROUTING) and its
FLANNEL-FWD filter chain, when ipMasq.
"""

from __future__ import annotations

import hashlib

from labbuilder.compile.cni.common import conf_json, host_local_files, pod_link
from labbuilder.compile.cni.mode import CniMode
from labbuilder.compile.netfilter import Table, comment
from labbuilder.compile.ops import (
    Address,
    Bridge,
    Fdb,
    Hairpin,
    LinkUp,
    Master,
    Neighbour,
    Ns,
    Op,
    Route,
    Vxlan,
    WriteFile,
)
from labbuilder.spec.model import Lab, Node

DEVICE = "flannel.1"
VNI = 1
PORT = 8472  # flannel's default (the Linux kernel's old default, not IANA's 4789)
OVERHEAD = 50  # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8
BRIDGE = "cni0"
NETWORK = "cbr0"  # kube-flannel's CNI network name
CONF_PATH = "/etc/cni/net.d/10-flannel.conflist"
SUBNET_ENV = "/run/flannel/subnet.env"
NET_CONF = "/etc/kube-flannel/net-conf.json"
POSTRTG, FWD = "FLANNEL-POSTRTG", "FLANNEL-FWD"
KUBE_PROXY_MARK = "0x4000/0x4000"


def mtu(lab: Lab) -> int:
    return lab.cni.mtu - OVERHEAD


def vtep_mac(node: Node) -> str:
    """A stable, locally administered unicast MAC for the node's flannel.1."""
    digest = bytearray(hashlib.sha256(f"{DEVICE}\0{node.name}\0{node.ip}".encode()).digest()[:6])
    digest[0] = (digest[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in digest)


def vtep_ip(node: Node) -> str:
    assert node.pod_cidr is not None
    return str(node.pod_cidr.network_address)


def links(lab: Lab, node: Node) -> list[Op]:
    if node.pod_cidr is None:
        return []  # flanneld needs the node's podCIDR: without one it does not start
    here = Ns(node.name)
    ops: list[Op] = [
        Vxlan(here, DEVICE, VNI, local=str(node.ip), port=PORT, dev="eth0", mtu=mtu(lab), mac=vtep_mac(node)),
        Address(here, DEVICE, f"{vtep_ip(node)}/32"),
        LinkUp(here, DEVICE),
    ]
    for other in lab.nodes:
        if other.name == node.name or other.pod_cidr is None:
            continue
        mac = vtep_mac(other)
        ops += [
            Neighbour(here, vtep_ip(other), mac, DEVICE),
            Fdb(here, mac, DEVICE, str(other.ip)),
            Route(here, str(other.pod_cidr), via=vtep_ip(other), dev=DEVICE, onlink=True),
        ]
    ops += [
        WriteFile(here, NET_CONF, conf_json({"Network": str(lab.cluster.pod_cidr), "Backend": {"Type": "vxlan"}})),
        WriteFile(here, SUBNET_ENV, subnet_env(lab, node)),
        WriteFile(here, CONF_PATH, conf_json(flannel_conf(lab))),
    ]
    if not node.pods:
        return ops
    gateway = node.pod_gateway
    ops += [
        Bridge(here, BRIDGE, mtu=mtu(lab)),
        Address(here, BRIDGE, f"{gateway}/{node.pod_cidr.prefixlen}"),
        LinkUp(here, BRIDGE),
    ]
    for pod in node.pods:
        pod_ns = Ns(node.name, pod.netns)
        ops += pod_link(lab, pod, mtu=mtu(lab))
        ops += [
            Master(here, pod.host_veth, BRIDGE),
            *([Hairpin(here, pod.host_veth)] if lab.cni.hairpin else []),
            LinkUp(here, pod.host_veth),
            Route(pod_ns, str(lab.cluster.pod_cidr), via=str(gateway), dev="eth0"),
            Route(pod_ns, "default", via=str(gateway), dev="eth0"),
        ]
    ops += host_local_files(lab, node, network=NETWORK)
    return ops


def subnet_env(lab: Lab, node: Node) -> str:
    """What flanneld writes for the CNI plugin: the cluster network, this node's lease, MTU, ipMasq."""
    assert node.pod_cidr is not None
    return (
        f"FLANNEL_NETWORK={lab.cluster.pod_cidr}\n"
        f"FLANNEL_SUBNET={node.pod_gateway}/{node.pod_cidr.prefixlen}\n"
        f"FLANNEL_MTU={mtu(lab)}\n"
        f"FLANNEL_IPMASQ={'true' if lab.cni.ip_masq else 'false'}\n"
    )


def flannel_conf(lab: Lab) -> dict[str, object]:
    """kube-flannel's cni-conf.json: the flannel plugin delegating to bridge, then portmap."""
    return {
        "name": NETWORK,
        "cniVersion": "0.3.1",
        "plugins": [
            {"type": "flannel", "delegate": {"hairpinMode": lab.cni.hairpin, "isDefaultGateway": True}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def masquerade(lab: Lab, node: Node) -> list[Table]:
    """flanneld's masquerade (iptables with --random-fully) and forward rules."""
    if not lab.cni.ip_masq or node.pod_cidr is None:
        return []
    net, lease, tag = str(lab.cluster.pod_cidr), str(node.pod_cidr), comment("flanneld masq")
    nat = Table("nat")
    nat.add("POSTROUTING", f"{tag} -j {POSTRTG}")
    nat.add(POSTRTG, f"-m mark --mark {KUBE_PROXY_MARK} {tag} -j RETURN")
    nat.add(POSTRTG, f"-s {net} -d {net} {tag} -j RETURN")
    nat.add(POSTRTG, f"-s {net} ! -d 224.0.0.0/4 {tag} -j MASQUERADE --random-fully")
    nat.add(POSTRTG, f"! -s {net} -d {lease} {tag} -j RETURN")
    nat.add(POSTRTG, f"! -s {net} -d {net} {tag} -j MASQUERADE --random-fully")
    fwd, filt = comment("flanneld forward"), Table("filter")
    filt.add("FORWARD", f"{fwd} -j {FWD}")
    filt.add(FWD, f"-s {net} {fwd} -j ACCEPT")
    filt.add(FWD, f"-d {net} {fwd} -j ACCEPT")
    return [nat, filt]


MODE = CniMode(
    "vxlan", links, masquerade, pod_bridge=lambda lab: BRIDGE, overlay=f"{DEVICE}  VXLAN VNI {VNI}, udp/{PORT}"
)
