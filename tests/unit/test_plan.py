"""The plan for the KTHW lab: the operations a learner would type, in order, touching nothing."""

from __future__ import annotations

import json

from labbuilder.compile.cni.bridge import masq_chain
from labbuilder.compile.kubelet import apiserver_version
from labbuilder.compile.ops import ROUTER, AddNetns, Iptables, Route, Veth, WriteFile
from labbuilder.compile.pki import lab_pki
from labbuilder.compile.plan import compile_plan
from labbuilder.spec.addressing import hashed_mac
from labbuilder.spec.load import load
from labbuilder.spec.resolve import build_model


def kthw_plan(name: str = "kthw"):
    return compile_plan(build_model(load(name)).lab)


def describe(plan, key):
    return [op.describe() for op in plan.steps[key]]


def test_router_holds_the_gateway_and_the_vpc_routes():
    plan = kthw_plan()
    assert describe(plan, ROUTER) == [
        "ip link add lab0 address 02:42:0a:f0:00:01 mtu 1500 type bridge",  # Docker-style MAC from 10.240.0.1
        "ip addr add 10.240.0.1/24 dev lab0",
        "ip link set lab0 up",
        "ip route replace 10.200.0.0/24 via 10.240.0.20",
        "ip route replace 10.200.1.0/24 via 10.240.0.21",
        "ip route replace 10.200.2.0/24 via 10.240.0.22",
        f"cat > /var/lib/kubernetes/ca.pem <<'EOF'\n{lab_pki(plan.lab).ca.rstrip()}\nEOF",  # KTHW's workstation
    ]


def test_worker_gets_uplink_bridge_pods_and_masquerade():
    plan = kthw_plan()
    lines = describe(plan, "worker-0")
    assert lines[:6] == [
        f"ip link add worker-0 address {hashed_mac('kthw', 'uplink', 'worker-0')} mtu 1500 type veth "
        "peer name eth0 address 02:42:0a:f0:00:14 mtu 1500 netns <pid of worker-0>",
        "ip link set worker-0 master lab0",
        "ip link set worker-0 up",
        "ip addr add 10.240.0.20/24 dev eth0",
        "ip link set eth0 up",
        "ip route replace default via 10.240.0.1 dev eth0",
    ]
    assert "ip link add cnio0 address 0a:58:0a:c8:00:01 mtu 1500 type bridge" in lines
    assert "ip addr add 10.200.0.1/24 dev cnio0" in lines
    lab = plan.lab
    for pod in lab.node("worker-0").pods:
        ns = pod.netns
        assert f"ip netns add {ns}" in lines
        assert (
            f"ip link add {pod.host_veth} address {hashed_mac('kthw', 'veth', pod.ref)} mtu 1500 type veth "
            "peer name eth0 address "
            f"0a:58:{':'.join(f'{b:02x}' for b in pod.ip.packed)} mtu 1500 netns {ns}"
        ) in lines
        assert f"ip -n {ns} addr add {pod.ip}/24 dev eth0" in lines
        assert f"ip -n {ns} route replace default via 10.200.0.1 dev eth0" in lines
        assert lines.index(f"ip netns add {ns}") < lines.index(f"ip -n {ns} addr add {pod.ip}/24 dev eth0")


def test_cni_files_and_host_local_state():
    plan = kthw_plan()
    files = {op.path: op.content for op in plan.steps["worker-1"] if isinstance(op, WriteFile)}
    conf = json.loads(files["/etc/cni/net.d/10-bridge.conf"])
    assert conf == {
        "cniVersion": "0.3.1",
        "name": "bridge",
        "type": "bridge",
        "bridge": "cnio0",
        "isGateway": True,
        "ipMasq": True,
        "hairpinMode": True,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.200.1.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]},
    }
    pods = plan.lab.node("worker-1").pods
    assert files[f"/var/lib/cni/networks/bridge/{pods[0].ip}"] == f"{pods[0].container_id}\neth0"
    assert files["/var/lib/cni/networks/bridge/last_reserved_ip.0"] == str(pods[-1].ip)


def test_masquerade_chain_name_is_the_bridge_plugins_hash():
    # seed 004: network "bridge" and this container id give exactly this chain.
    cid = "631cab5de5565cc432a3beca0e2aece0cef9285482b11f3eb0b46c134e457854"
    assert masq_chain("bridge", cid) == "CNI-be726a77f15ea47ff32947a3"


def test_ipmasq_rules_present_only_with_ipmasq():
    for name, expected in (("kthw", True), ("kthw-nomasq", False)):
        plan = kthw_plan(name)
        [rules] = [op.payload for op in plan.steps["worker-0"] if isinstance(op, Iptables)]
        pod = plan.lab.node("worker-0").pods[0]
        chain = masq_chain("bridge", pod.container_id)
        line = (
            f'-A POSTROUTING -s {pod.ip}/32 -m comment --comment "name: \\"bridge\\" id: '
            f'\\"{pod.container_id}\\"" -j {chain}'
        )
        assert (line in rules.splitlines()) is expected
        assert (f"-A {chain} ! -d 224.0.0.0/4" in rules) is expected


def test_controllers_run_no_pods_and_serve_the_apiserver_port():
    plan = kthw_plan()
    ops = plan.steps["controller-0"]
    assert not any(isinstance(op, AddNetns) for op in ops)
    ready = "--ready /run/labbuilder/pids/controller-0.podserver.ready"
    assert any(op.describe() == f"podserver --config /etc/labbuilder/podserver.json {ready} &" for op in ops)
    served = next(
        json.loads(op.content) for op in ops if isinstance(op, WriteFile) and op.path.endswith("podserver.json")
    )
    assert served == [
        {
            "name": "controller-0",
            "ip": "10.240.0.10",
            "netns": None,
            "tcp": [6443],
            "tls": {"cert": "/var/lib/kubernetes/kubernetes.pem", "key": "/var/lib/kubernetes/kubernetes-key.pem"},
            "apiserver": {"version": apiserver_version(plan.lab)},
        }
    ]
    assert apiserver_version(plan.lab)["gitVersion"] == "v1.33.0"
    files = {op.path: op.content for op in ops if isinstance(op, WriteFile)}
    assert files["/var/lib/kubernetes/kubernetes.pem"] == lab_pki(plan.lab).cert


def test_nothing_is_planned_outside_the_lab_namespaces():
    plan = kthw_plan()
    known = {c.key for c in plan.containers}
    for key, op in plan.ops():
        assert op.ns.container in known, (key, op)
        if isinstance(op, Veth):
            assert op.peer_ns.container in known


def test_plans_are_deterministic_and_routes_only_in_the_router_mode():
    assert kthw_plan() == kthw_plan()
    routes = [op for op in kthw_plan().steps["worker-0"] if isinstance(op, Route) and not op.ns.netns]
    assert [r.dst for r in routes] == ["default"]
