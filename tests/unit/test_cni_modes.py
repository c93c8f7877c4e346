"""The plans of every CNI mode, without Docker: the exact operations and route shapes.

- `routes: nodes` (host-gw): `otherPodCIDR via otherNodeIP dev eth0` on every node, none in the
  router (seed 002's node table; the newest KTHW edition);
- `ptp` (kindnet, seeds 000/002): no bridge, a /32 host route per pod, the pod's on-link
  gateway, KIND-MASQ-AGENT;
- `vxlan` (flannel, seed 002): flannel.1, per remote node a neighbour, an FDB entry and an
  onlink route, cni0 with MTU 1450, subnet.env, FLANNEL-POSTRTG.
"""

from __future__ import annotations

import json
import re
from typing import get_args

import pytest

from labbuilder.compile.cni import mode_for, ptp, vxlan
from labbuilder.compile.netfilter import parse_save
from labbuilder.compile.ops import ROUTER, AddNetns, Bridge, Iptables, Op, Route, Veth, WriteFile
from labbuilder.compile.pki import lab_pki
from labbuilder.compile.plan import Plan, compile_plan
from labbuilder.resources import labs_dir
from labbuilder.spec.load import load, load_text
from labbuilder.spec.model import CniMode, Lab
from labbuilder.spec.resolve import build_model


def lab_of(name: str, **replace: str) -> Lab:
    """A lab from labs/<name>.yaml, optionally with some lines of its text replaced."""
    text = (labs_dir() / f"{name}.yaml").read_text()
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return build_model(load_text(text, f"{name}.yaml")).lab


def plan_of(name: str, **replace: str) -> Plan:
    return compile_plan(lab_of(name, **replace))


# Veth and bridge MACs are chosen by the common code (derived from names); the modes' own MACs
# (flannel's VTEPs) are checked on the operations themselves.
_MAC = re.compile(r" address [0-9a-f]{2}(?::[0-9a-f]{2}){5}")


def _text(op: Op) -> str:
    text = op.describe()
    return _MAC.sub("", text) if isinstance(op, Veth | Bridge) else text


def describe(plan: Plan, key: str) -> list[str]:
    return [_text(op) for op in plan.steps[key] if not isinstance(op, Iptables)]


def links(module, lab: Lab, node: str) -> list[str]:
    """What a CNI mode plans for a node beyond its uplink (the kubelet's and kube-proxy's parts aside)."""
    return [_text(op) for op in module.links(lab, lab.node(node))]


def node_routes(plan: Plan, key: str) -> list[str]:
    """The node's own routes (not its pods'), as planned."""
    return [op.describe() for op in plan.steps[key] if isinstance(op, Route) and not op.ns.netns]


def nat(plan: Plan, key: str) -> dict[str, list[str]]:
    [payload] = [op.payload for op in plan.steps[key] if isinstance(op, Iptables)]
    return parse_save(payload)["nat"].chains


def files(plan: Plan, key: str) -> dict[str, str]:
    return {op.path: op.content for op in plan.steps[key] if isinstance(op, WriteFile)}


def test_every_mode_of_the_schema_has_a_module():
    for mode in get_args(CniMode):
        lab = lab_of("kind", **{"mode: ptp ": f"mode: {mode} "})
        assert mode_for(lab) is not None
        compile_plan(lab)  # and plans


def test_the_shipped_labs_load():
    for name in ("kind", "flannel", "kthw-hostgw"):
        assert build_model(load(name)).lab.name == name


# -- host-gw ----------------------------------------------------------------------------------


def test_hostgw_routes_are_on_every_node_and_none_in_the_router():
    plan = plan_of("kthw-hostgw")
    assert describe(plan, ROUTER) == [
        "ip link add lab0 mtu 1500 type bridge",
        "ip addr add 10.240.0.1/24 dev lab0",
        "ip link set lab0 up",
        f"cat > /var/lib/kubernetes/ca.pem <<'EOF'\n{lab_pki(plan.lab).ca.rstrip()}\nEOF",  # the workstation's CA
    ]
    assert node_routes(plan, "worker-0") == [
        "ip route replace default via 10.240.0.1 dev eth0",
        "ip route replace 10.200.1.0/24 via 10.240.0.21 dev eth0",
        "ip route replace 10.200.2.0/24 via 10.240.0.22 dev eth0",
    ]
    # Controllers run no pods but reach every worker's pods directly too.
    assert node_routes(plan, "controller-1") == [
        "ip route replace default via 10.240.0.1 dev eth0",
        "ip route replace 10.200.0.0/24 via 10.240.0.20 dev eth0",
        "ip route replace 10.200.1.0/24 via 10.240.0.21 dev eth0",
        "ip route replace 10.200.2.0/24 via 10.240.0.22 dev eth0",
    ]


def test_hostgw_keeps_the_bridge_plugin_datapath():
    plan, kthw = plan_of("kthw-hostgw"), compile_plan(build_model(load("kthw")).lab)
    [cnio0] = [op for op in plan.steps["worker-0"] if isinstance(op, Bridge)]
    assert (cnio0.name, cnio0.mac) == ("cnio0", "0a:58:0a:c8:00:01")
    strip = {
        "ip route replace 10.200.1.0/24 via 10.240.0.21 dev eth0",
        "ip route replace 10.200.2.0/24 via 10.240.0.22 dev eth0",
    }
    # Same operations as KTHW with router routes, once the host-gw routes are taken out; the
    # names derive from the lab name, so compare shapes with the names masked.
    mask = re.compile(
        r"cni-[0-9a-f-]{36}|veth[0-9a-f]{8}|[0-9a-f]{64}|CNI-[0-9a-f]{24}|[a-z]+-[a-z0-9]{10}-[a-z0-9]{5}"
    )
    # The certificates differ too: each lab has its own CA.
    ours = [
        mask.sub("X", line) for line in describe(plan, "worker-0") if line not in strip and "-----BEGIN" not in line
    ]
    theirs = [mask.sub("X", line) for line in describe(kthw, "worker-0") if "-----BEGIN" not in line]
    assert ours == theirs


# -- ptp (kindnet) --------------------------------------------------------------------------------


def test_kind_lab_is_seed_002s_cluster():
    lab = lab_of("kind")
    assert (str(lab.network.cidr), str(lab.network.gateway)) == ("172.18.0.0/16", "172.18.0.1")
    assert [(n.name, n.role, str(n.ip), str(n.pod_cidr)) for n in lab.nodes] == [
        ("control-plane", "controller", "172.18.0.3", "10.244.0.0/24"),
        ("worker", "worker", "172.18.0.2", "10.244.1.0/24"),
        ("worker2", "worker", "172.18.0.4", "10.244.2.0/24"),
    ]
    assert [lab.container_name(n.name) for n in lab.nodes] == ["kind-control-plane", "kind-worker", "kind-worker2"]
    assert (str(lab.cluster.service_cidr), str(lab.cluster.dns_ip)) == ("10.96.0.0/16", "10.96.0.10")
    kubernetes = next(s for s in lab.services if s.ref == "default/kubernetes")
    assert str(kubernetes.cluster_ip) == "10.96.0.1"
    # seed 002: the only pod on kind-worker is 10.244.1.2
    assert [str(p.ip) for p in lab.node("worker").pods] == ["10.244.1.2"]


def test_ptp_worker_plan_is_kindnets_line_for_line():
    lab = lab_of("kind")
    [pod] = lab.node("worker").pods
    ns, veth = pod.netns, pod.host_veth
    lines = links(ptp, lab, "worker")
    assert lines[:2] == [
        "ip route replace 10.244.0.0/24 via 172.18.0.3 dev eth0",
        "ip route replace 10.244.2.0/24 via 172.18.0.4 dev eth0",
    ]
    assert lines[2].startswith(f"cat > {ptp.CONF_PATH} <<'EOF'")
    assert lines[3:] == [
        f"ip netns add {ns}",
        f"ip link add {veth} mtu 1500 type veth peer name eth0 mtu 1500 netns {ns}",
        f"ip -n {ns} link set lo up",
        f"ip -n {ns} addr add 10.244.1.2/24 dev eth0",
        f"ip -n {ns} link set eth0 up",
        f"ip link set {veth} up",
        f"ip addr add 10.244.1.1/32 dev {veth}",
        f"ip route replace 10.244.1.2 dev {veth} scope host",
        f"ip -n {ns} route replace 10.244.1.1 dev eth0 scope link src 10.244.1.2",
        f"ip -n {ns} route replace 10.244.1.0/24 via 10.244.1.1 dev eth0 src 10.244.1.2",
        f"ip -n {ns} route replace default via 10.244.1.1 dev eth0",
        f"cat > /run/cni-ipam-state/kindnet/10.244.1.2 <<'EOF'\n{pod.container_id}\neth0\nEOF",
        "cat > /run/cni-ipam-state/kindnet/last_reserved_ip.0 <<'EOF'\n10.244.1.2\nEOF",
    ]
    # and the whole plan carries them, after the node's uplink
    assert describe(plan_of("kind"), "worker")[6 : 6 + len(lines)] == lines


def test_ptp_has_no_bridge_and_the_router_no_pod_routes():
    plan = plan_of("kind")
    assert not any(isinstance(op, Bridge) and op.ns.container != ROUTER for _, op in plan.ops())
    assert not any(isinstance(op, Route) for op in plan.steps[ROUTER])


def test_ptp_control_plane_runs_pods_with_a_host_route_each():
    # A node with a podCIDR runs pods whatever its role: kind's control-plane does (seed 000).
    plan = plan_of("kind")
    cp = plan.lab.node("control-plane")
    assert cp.role == "controller" and cp.pods
    assert any(p.workload == "webserver" and str(p.ip) == "10.244.0.2" for p in cp.pods)
    assert [op.ns.netns for op in plan.steps["control-plane"] if isinstance(op, AddNetns)] == [p.netns for p in cp.pods]
    routes = node_routes(plan, "control-plane")
    for pod in cp.pods:
        assert f"ip route replace {pod.ip} dev {pod.host_veth} scope host" in routes
    assert "ip route replace 10.244.1.0/24 via 172.18.0.2 dev eth0" in routes
    # It also serves the apiserver port behind default/kubernetes.
    served = next(
        json.loads(op.content)
        for op in plan.steps["control-plane"]
        if isinstance(op, WriteFile) and op.path == "/etc/labbuilder/podserver.json"
    )
    [apiserver] = [entry for entry in served if entry["name"] == "control-plane"]
    assert (apiserver["ip"], apiserver["netns"], apiserver["tcp"]) == ("172.18.0.3", None, [6443])
    assert apiserver["tls"] == {
        "cert": "/var/lib/kubernetes/kubernetes.pem",
        "key": "/var/lib/kubernetes/kubernetes-key.pem",
    }
    ready = "--ready /run/labbuilder/pids/control-plane.podserver.ready"
    assert f"podserver --config /etc/labbuilder/podserver.json {ready} &" in describe(plan, "control-plane")


def test_ptp_conflist_and_host_local_state():
    plan = plan_of("kind")
    written = files(plan, "worker2")
    conf = json.loads(written["/etc/cni/net.d/10-kindnet.conflist"])
    assert conf["name"] == "kindnet"
    assert [p["type"] for p in conf["plugins"]] == ["ptp", "portmap"]
    assert conf["plugins"][0]["ipam"] == {
        "type": "host-local",
        "dataDir": "/run/cni-ipam-state",
        "routes": [{"dst": "0.0.0.0/0"}],
        "ranges": [[{"subnet": "10.244.2.0/24"}]],
    }
    [pod] = plan.lab.node("worker2").pods
    assert written["/run/cni-ipam-state/kindnet/10.244.2.2"] == f"{pod.container_id}\neth0"


def test_kind_masq_agent_rules():
    lab = lab_of("kind")
    [table] = ptp.masquerade(lab, lab.node("worker"))
    jump = (
        '-m addrtype ! --dst-type LOCAL -m comment --comment "kind-masq-agent: ensure nat POSTROUTING directs '
        'all non-LOCAL destination traffic to our custom KIND-MASQ-AGENT chain" -j KIND-MASQ-AGENT'
    )
    assert table.name == "nat" and table.chains["POSTROUTING"] == [jump]
    chains = nat(plan_of("kind"), "worker")
    # after kube-proxy's own jump, as `iptables -t nat -L POSTROUTING` shows it on a kind node
    assert chains["POSTROUTING"][-2:] == [
        '-m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        jump,
    ]
    assert chains["KIND-MASQ-AGENT"] == [
        '-d 10.244.0.0/16 -m comment --comment "kind-masq-agent: local traffic is not subject to MASQUERADE" -j RETURN',
        '-m comment --comment "kind-masq-agent: outbound traffic is subject to MASQUERADE (must be last in chain)" '
        "-j MASQUERADE",
    ]
    # The bridge plugin's per-pod chains are not there: kindnet's ptp runs with ipMasq false.
    assert not any(chain.startswith("CNI-") for chain in chains)


def test_ptp_without_ipmasq_has_no_masq_agent():
    chains = nat(plan_of("kind", **{"ipMasq: true ": "ipMasq: false "}), "worker")
    assert "KIND-MASQ-AGENT" not in chains
    assert all("KIND-MASQ-AGENT" not in rule for rule in chains["POSTROUTING"])


def test_ptp_with_router_routes_moves_them_to_the_router():
    plan = plan_of("kind", **{"routes: nodes ": "routes: router "})
    assert [op.describe() for op in plan.steps[ROUTER] if isinstance(op, Route)] == [
        "ip route replace 10.244.0.0/24 via 172.18.0.3",
        "ip route replace 10.244.1.0/24 via 172.18.0.2",
        "ip route replace 10.244.2.0/24 via 172.18.0.4",
    ]
    assert node_routes(plan, "worker") == [
        "ip route replace default via 172.18.0.1 dev eth0",
        f"ip route replace 10.244.1.2 dev {plan.lab.node('worker').pods[0].host_veth} scope host",
    ]


# -- vxlan (flannel) ------------------------------------------------------------------------------


def test_vtep_macs_are_stable_unicast_local_and_distinct():
    lab = lab_of("flannel")
    macs = [vxlan.vtep_mac(n) for n in lab.nodes]
    assert macs == [vxlan.vtep_mac(n) for n in lab_of("flannel").nodes]
    assert len(set(macs)) == len(macs)
    for mac in macs:
        assert re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", mac)
        first = int(mac[:2], 16)
        assert first & 0x02 and not first & 0x01  # locally administered, unicast


def test_vxlan_worker_plan_is_flannels_line_for_line():
    plan = plan_of("flannel")
    lab = plan.lab
    cp, w2 = vxlan.vtep_mac(lab.node("control-plane")), vxlan.vtep_mac(lab.node("worker2"))
    mine = vxlan.vtep_mac(lab.node("worker"))
    [pod] = lab.node("worker").pods
    ns, veth = pod.netns, pod.host_veth
    lines = links(vxlan, lab, "worker")
    assert describe(plan, "worker")[6 : 6 + len(lines)] == lines
    assert lines[:9] == [
        f"ip link add flannel.1 address {mine} mtu 1450 type vxlan id 1 local 172.18.0.2 dev eth0 "
        "dstport 8472 nolearning",
        "ip addr add 10.244.1.0/32 dev flannel.1",
        "ip link set flannel.1 up",
        f"ip neigh replace 10.244.0.0 lladdr {cp} dev flannel.1 nud permanent",
        f"bridge fdb append {cp} dev flannel.1 dst 172.18.0.3 self permanent",
        "ip route replace 10.244.0.0/24 via 10.244.0.0 dev flannel.1 onlink",
        f"ip neigh replace 10.244.2.0 lladdr {w2} dev flannel.1 nud permanent",
        f"bridge fdb append {w2} dev flannel.1 dst 172.18.0.4 self permanent",
        "ip route replace 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink",
    ]
    rest = [line for line in lines[9:] if not line.startswith("cat > ")]
    assert rest == [
        "ip link add cni0 mtu 1450 type bridge",
        "ip addr add 10.244.1.1/24 dev cni0",
        "ip link set cni0 up",
        f"ip netns add {ns}",
        f"ip link add {veth} mtu 1450 type veth peer name eth0 mtu 1450 netns {ns}",
        f"ip -n {ns} link set lo up",
        f"ip -n {ns} addr add 10.244.1.2/24 dev eth0",
        f"ip -n {ns} link set eth0 up",
        f"ip link set {veth} master cni0",
        f"ip link set {veth} type bridge_slave hairpin on",
        f"ip link set {veth} up",
        f"ip -n {ns} route replace 10.244.0.0/16 via 10.244.1.1 dev eth0",
        f"ip -n {ns} route replace default via 10.244.1.1 dev eth0",
    ]


def test_vxlan_router_and_nodes_hold_no_underlay_pod_routes():
    plan = plan_of("flannel")
    assert not any(isinstance(op, Route) for op in plan.steps[ROUTER])
    for node in plan.lab.nodes:
        for op in plan.steps[node.name]:
            if isinstance(op, Route) and not op.ns.netns and op.dst != "default":
                assert op.dev == "flannel.1" and op.onlink, op.describe()


def test_vxlan_files():
    written = files(plan_of("flannel"), "worker2")
    assert written["/run/flannel/subnet.env"] == (
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.2.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
    )
    assert json.loads(written["/etc/kube-flannel/net-conf.json"]) == {
        "Network": "10.244.0.0/16",
        "Backend": {"Type": "vxlan"},
    }
    conf = json.loads(written["/etc/cni/net.d/10-flannel.conflist"])
    assert conf["name"] == "cbr0"
    assert conf["plugins"][0] == {"type": "flannel", "delegate": {"hairpinMode": True, "isDefaultGateway": True}}
    assert "/var/lib/cni/networks/cbr0/10.244.2.2" in written


def test_vxlan_mtu_follows_the_uplink():
    plan = plan_of("flannel", **{"ipMasq: true ": "ipMasq: true\n  mtu: 9000"})
    lines = describe(plan, "worker")
    assert any(line.startswith("ip link add flannel.1 ") and " mtu 8950 " in line for line in lines)
    assert "ip link add cni0 mtu 8950 type bridge" in lines
    assert all(op.mtu == 8950 for op in plan.steps["worker"] if isinstance(op, Veth) and op.peer_ns.netns)
    assert "FLANNEL_MTU=8950" in files(plan, "worker")["/run/flannel/subnet.env"]


def test_flanneld_masquerade_rules():
    chains = nat(plan_of("flannel"), "worker")
    tag = '-m comment --comment "flanneld masq"'
    assert f"{tag} -j FLANNEL-POSTRTG" in chains["POSTROUTING"]
    assert chains["FLANNEL-POSTRTG"] == [
        f"-m mark --mark 0x4000/0x4000 {tag} -j RETURN",
        f"-s 10.244.0.0/16 -d 10.244.0.0/16 {tag} -j RETURN",
        f"-s 10.244.0.0/16 ! -d 224.0.0.0/4 {tag} -j MASQUERADE --random-fully",
        f"! -s 10.244.0.0/16 -d 10.244.1.0/24 {tag} -j RETURN",
        f"! -s 10.244.0.0/16 -d 10.244.0.0/16 {tag} -j MASQUERADE --random-fully",
    ]
    lab = lab_of("flannel")
    [_, forward] = vxlan.masquerade(lab, lab.node("worker"))
    fwd = '-m comment --comment "flanneld forward"'
    assert forward.chains == {
        "FORWARD": [f"{fwd} -j FLANNEL-FWD"],
        "FLANNEL-FWD": [f"-s 10.244.0.0/16 {fwd} -j ACCEPT", f"-d 10.244.0.0/16 {fwd} -j ACCEPT"],
    }
    no_masq = nat(plan_of("flannel", **{"ipMasq: true ": "ipMasq: false "}), "worker")
    assert "FLANNEL-POSTRTG" not in no_masq


def test_vxlan_hairpin_follows_the_spec():
    lab = lab_of("flannel", **{"ipMasq: true ": "hairpinMode: false\n  ipMasq: true "})
    assert not any("hairpin on" in line for line in links(vxlan, lab, "worker"))
    written = files(compile_plan(lab), "worker")
    assert json.loads(written[vxlan.CONF_PATH])["plugins"][0]["delegate"]["hairpinMode"] is False


@pytest.mark.parametrize("name", ["kind", "flannel", "kthw-hostgw"])
def test_mode_plans_stay_inside_the_lab_and_are_deterministic(name):
    plan = plan_of(name)
    assert plan == plan_of(name)
    known = {c.key for c in plan.containers}
    for _, op in plan.ops():
        assert op.ns.container in known
        if isinstance(op, Veth):
            assert op.peer_ns.container in known
