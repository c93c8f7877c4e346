"""Every CNI mode on the real engine, with real packets: kind/kindnet (ptp + host-gw, seeds 000 and
002), flannel (vxlan, seed 002) and KTHW with host-gw routes.

Each lab is looked at from inside its containers as a learner would: route tables line for line,
the VXLAN device and its FDB, a capture on the lab router's bridge while pods ping each other,
ClusterIPs curled from pods, and the iptables tables read back equal to the plan.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator

import pytest

from labbuilder.compile.cni import vxlan
from labbuilder.compile.netfilter import normalise, parse_save
from labbuilder.compile.ops import Iptables
from labbuilder.compile.plan import compile_plan
from labbuilder.spec.load import load
from labbuilder.spec.model import Lab, Pod
from labbuilder.spec.resolve import build_model
from tests.integration.conftest import ROOT, bring_up, dexec, dump, host_state, lab_containers, labbuilder, pod_exec, sh

pytestmark = pytest.mark.docker


def model(name: str) -> Lab:
    return build_model(load(str(ROOT / f"labs/{name}.yaml"))).lab


KIND, FLANNEL, HOSTGW = model("kind"), model("flannel"), model("kthw-hostgw")


@pytest.fixture(scope="module")
def kind(host_before) -> Iterator[str]:
    yield from bring_up(str(ROOT / "labs/kind.yaml"), "kind")


@pytest.fixture(scope="module")
def flannel(host_before) -> Iterator[str]:
    yield from bring_up(str(ROOT / "labs/flannel.yaml"), "flannel")


@pytest.fixture(scope="module")
def hostgw(host_before) -> Iterator[str]:
    yield from bring_up(str(ROOT / "labs/kthw-hostgw.yaml"), "kthw-hostgw")


# -- helpers ------------------------------------------------------------------------------------


def pod(lab: Lab, workload: str, node: str | None = None) -> Pod:
    return next(p for p in lab.pods if p.workload == workload and (node is None or p.node == node))


def in_pod(lab: Lab, p: Pod, *argv: str, check: bool = True) -> str:
    return pod_exec(lab.container_name(p.node), p.netns, *argv, check=check)


def ping(lab: Lab, source: Pod, target: Pod) -> None:
    out = in_pod(lab, source, "ping", "-c", "2", "-W", "2", str(target.ip))
    assert "2 received" in out, out


def curl(lab: Lab, source: Pod, url: str) -> str:
    return in_pod(lab, source, "curl", "-s", "-m", "5", url)


def apiserver_seen(lab: Lab, source: Pod) -> str:
    """Who answered `https://<kubernetes ClusterIP>/healthz` and the client it saw: the apiserver's
    X-Labbuilder-Server header (`pod=… ip=… client=…`, as the pods' line)."""
    url = f"https://{cluster_ip(lab, 'default/kubernetes')}/healthz"
    head = in_pod(lab, source, "curl", "-sk", "-m", "5", "-D", "-", "-o", "/dev/null", url)
    return next(line.split(": ", 1)[1] for line in head.splitlines() if line.startswith("X-Labbuilder-Server: "))


def cluster_ip(lab: Lab, ref: str) -> str:
    return str(next(s for s in lab.services if s.ref == ref).cluster_ip)


def capture(lab: Lab, bpf: str, action: Callable[[], object], count: int = 2, seconds: int = 8) -> tuple[str, str]:
    """tcpdump on the router's bridge (lab0) while `action` runs; bounded by -c and timeout."""
    argv = ["docker", "exec", lab.router_name, "timeout", str(seconds), "tcpdump", "-nli", "lab0", "-c", str(count)]
    proc = subprocess.Popen([*argv, bpf], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        err = ""
        while "listening on" not in err:  # tcpdump is ready once it says so
            line = proc.stderr.readline()
            if not line:
                break
            err += line
        action()
        out, rest = proc.communicate(timeout=seconds + 15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return out, err + rest


def routes(container: str, netns: str | None = None) -> list[str]:
    if netns:
        return pod_exec(container, netns, "ip", "route").splitlines()
    return dexec(container, "ip", "route").splitlines()


def planned_tables(lab: Lab, node: str) -> dict[str, dict[str, list[str]]]:
    [payload] = [op.payload for op in compile_plan(lab).steps[node] if isinstance(op, Iptables)]
    return normalise(parse_save(payload))


def saved_tables(container: str) -> dict[str, dict[str, list[str]]]:
    saved = normalise(parse_save(dexec(container, "iptables-save")))
    return {name: saved[name] for name in ("nat", "filter")}


def kind_routes_for(lab: Lab, node_name: str) -> list[str]:
    """seed 000/002's node table: default, per local pod a /32 scope host, per other node its
    podCIDR via its IP, the node network — in the kernel's (address) order."""
    node = lab.node(node_name)
    entries = [(p.ip, 32, f"{p.ip} dev {p.host_veth} scope host ") for p in node.pods]
    entries += [
        (o.pod_cidr.network_address, o.pod_cidr.prefixlen, f"{o.pod_cidr} via {o.ip} dev eth0 ")
        for o in lab.nodes
        if o.name != node.name and o.pod_cidr is not None
    ]
    net = lab.network.cidr
    entries.append((net.network_address, net.prefixlen, f"{net} dev eth0 proto kernel scope link src {node.ip} "))
    return [f"default via {lab.network.gateway} dev eth0 "] + [line for *_, line in sorted(entries)]


# -- kind: ptp (kindnet) + host-gw ----------------------------------------------------------------


def test_kind_containers_are_named_as_kind_names_them(kind):
    assert lab_containers("kind") == ["kind-control-plane", "kind-router", "kind-worker", "kind-worker2"]
    assert dexec("kind-worker", "hostname").strip() == "worker"


def test_kind_worker_route_table_is_seed_002s(kind):
    veth = pod(KIND, "my-shell").host_veth
    assert routes("kind-worker") == [
        "default via 172.18.0.1 dev eth0 ",
        "10.244.0.0/24 via 172.18.0.3 dev eth0 ",
        f"10.244.1.2 dev {veth} scope host ",
        "10.244.2.0/24 via 172.18.0.4 dev eth0 ",
        "172.18.0.0/16 dev eth0 proto kernel scope link src 172.18.0.2 ",
    ]


def test_kind_control_plane_runs_pods_with_seed_000s_table(kind):
    cp = KIND.node("control-plane")
    assert cp.role == "controller" and cp.pods
    assert routes("kind-control-plane") == kind_routes_for(KIND, "control-plane")
    listed = sorted(line.split()[0] for line in dexec("kind-control-plane", "ip", "netns").splitlines())
    assert listed == sorted(p.netns for p in cp.pods)


def test_kind_pod_route_table_is_seed_002s(kind):
    shell = pod(KIND, "my-shell")
    assert routes("kind-worker", shell.netns) == [
        "default via 10.244.1.1 dev eth0 ",
        "10.244.1.0/24 via 10.244.1.1 dev eth0 src 10.244.1.2 ",
        "10.244.1.1 dev eth0 scope link src 10.244.1.2 ",
    ]
    assert "inet 10.244.1.2/24 " in in_pod(KIND, shell, "ip", "-o", "-4", "addr", "show", "dev", "eth0")


def test_kind_has_no_bridge_and_the_pod_veth_holds_the_gateway(kind):
    for node in ("control-plane", "worker", "worker2"):
        assert dexec(f"kind-{node}", "ip", "-o", "link", "show", "type", "bridge") == ""
    veth = pod(KIND, "my-shell").host_veth
    assert "inet 10.244.1.1/32 " in dexec("kind-worker", "ip", "-o", "-4", "addr", "show", "dev", veth)


def test_kind_router_holds_no_pod_routes(kind):
    assert routes("kind-router") == ["172.18.0.0/16 dev lab0 proto kernel scope link src 172.18.0.1 "]


def test_kind_pods_ping_across_nodes_unnatted_and_the_router_sees_pod_addresses(kind):
    shell, nginx, web = pod(KIND, "my-shell"), pod(KIND, "nginx"), pod(KIND, "webserver")
    ping(KIND, shell, web)  # onto the control-plane
    out, err = capture(KIND, f"icmp and host {nginx.ip}", lambda: ping(KIND, shell, nginx))
    assert "2 packets captured" in err, err
    assert f"IP {shell.ip} > {nginx.ip}: ICMP echo request" in out
    assert f"IP {nginx.ip} > {shell.ip}: ICMP echo reply" in out
    conntrack = dexec("kind-worker", "conntrack", "-L", "-p", "icmp", "-d", str(nginx.ip))
    assert f"src={nginx.ip} dst={shell.ip}" in conntrack  # KIND-MASQ-AGENT returned: pod to pod


def test_kind_services_answer_from_pods_and_masq_agent_hides_pods_from_nodes(kind):
    shell = pod(KIND, "my-shell")
    answer = curl(KIND, shell, "http://10.96.198.83:8080/")  # seed 000's webserver ClusterIP
    assert answer.startswith(f"pod={pod(KIND, 'webserver').name} ip=10.244.0.2 client={shell.ip}:")
    answer = curl(KIND, shell, f"http://{cluster_ip(KIND, 'default/nginx')}/")
    assert answer.startswith(f"pod={pod(KIND, 'nginx').name} ip=10.244.2.2 client={shell.ip}:")
    # default/kubernetes → the control-plane's :6443: leaving the pod network, so MASQUERADE.
    assert apiserver_seen(KIND, shell).startswith("pod=control-plane ip=172.18.0.3 client=172.18.0.2:")


def test_kind_files_and_iptables_as_planned(kind):
    conf = json.loads(dexec("kind-worker2", "cat", "/etc/cni/net.d/10-kindnet.conflist"))
    assert conf["plugins"][0]["type"] == "ptp"
    assert conf["plugins"][0]["ipam"]["ranges"] == [[{"subnet": "10.244.2.0/24"}]]
    assert dexec("kind-worker2", "ls", "/run/cni-ipam-state/kindnet").split() == ["10.244.2.2", "last_reserved_ip.0"]
    for node in ("control-plane", "worker"):
        saved, planned = saved_tables(f"kind-{node}"), planned_tables(KIND, node)
        assert saved == planned
        assert saved["nat"]["KIND-MASQ-AGENT"][-1].endswith("-j MASQUERADE")


# -- flannel: vxlan -----------------------------------------------------------------------------


def test_flannel_worker_route_table(flannel):
    assert routes("flannel-worker") == [
        "default via 172.18.0.1 dev eth0 ",
        "10.244.0.0/24 via 10.244.0.0 dev flannel.1 onlink ",
        "10.244.1.0/24 dev cni0 proto kernel scope link src 10.244.1.1 ",
        "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink ",
        "172.18.0.0/16 dev eth0 proto kernel scope link src 172.18.0.2 ",
    ]
    assert routes("flannel-router") == ["172.18.0.0/16 dev lab0 proto kernel scope link src 172.18.0.1 "]


def test_flannel_pod_route_table_and_mtu(flannel):
    shell = pod(FLANNEL, "my-shell")
    assert routes("flannel-worker", shell.netns) == [
        "default via 10.244.1.1 dev eth0 ",
        "10.244.0.0/16 via 10.244.1.1 dev eth0 ",
        "10.244.1.0/24 dev eth0 proto kernel scope link src 10.244.1.2 ",
    ]
    assert " mtu 1450 " in in_pod(FLANNEL, shell, "ip", "-o", "link", "show", "dev", "eth0")
    assert " mtu 1450 " in dexec("flannel-worker", "ip", "-o", "link", "show", "dev", "cni0")


def test_flannel_vxlan_device(flannel):
    shown = dexec("flannel-worker", "ip", "-d", "link", "show", "flannel.1")
    assert " mtu 1450 " in shown
    assert f"link/ether {vxlan.vtep_mac(FLANNEL.node('worker'))} " in shown
    assert "vxlan id 1 local 172.18.0.2 dev eth0 srcport 0 0 dstport 8472 nolearning " in shown
    assert "inet 10.244.1.0/32 scope global flannel.1" in dexec("flannel-worker", "ip", "addr", "show", "flannel.1")


def test_flannel_fdb_and_neighbours_point_at_the_remote_vteps(flannel):
    remote = [n for n in FLANNEL.nodes if n.name != "worker"]
    fdb = dexec("flannel-worker", "bridge", "fdb", "show", "dev", "flannel.1").splitlines()
    neigh = dexec("flannel-worker", "ip", "neigh", "show", "dev", "flannel.1").splitlines()
    for node in remote:
        # the MAC the remote flannel.1 really has, read from that node
        mac = dexec(f"flannel-{node.name}", "cat", "/sys/class/net/flannel.1/address").strip()
        assert mac == vxlan.vtep_mac(node)
        assert f"{mac} dst {node.ip} self permanent" in fdb
        assert f"{node.pod_cidr.network_address} lladdr {mac} PERMANENT " in neigh
    assert len(fdb) == len(remote)  # one entry per remote node, nothing learnt


def test_flannel_ping_crosses_the_router_as_vxlan(flannel):
    shell, nginx = pod(FLANNEL, "my-shell"), pod(FLANNEL, "nginx")
    out, err = capture(FLANNEL, "udp port 8472", lambda: ping(FLANNEL, shell, nginx))
    assert "2 packets captured" in err, err
    assert "IP 172.18.0.2." in out and "> 172.18.0.4.8472: OTV" in out  # outer: node to node, UDP 8472
    assert f"IP {shell.ip} > {nginx.ip}: ICMP echo request" in out  # inner: the pods' ping
    # No frame on the node network carries a pod address in its outer header.
    out, err = capture(FLANNEL, f"host {nginx.ip}", lambda: ping(FLANNEL, shell, nginx), count=1, seconds=4)
    assert "0 packets captured" in err, out + err


def test_flannel_services_and_control_plane_pods(flannel):
    shell, web = pod(FLANNEL, "my-shell"), pod(FLANNEL, "webserver")
    ping(FLANNEL, shell, web)
    assert curl(FLANNEL, shell, "http://10.96.198.83:8080/").startswith(
        f"pod={web.name} ip={web.ip} client={shell.ip}:"
    )
    answer = curl(FLANNEL, shell, f"http://{cluster_ip(FLANNEL, 'default/nginx')}/")
    assert answer.startswith(f"pod={pod(FLANNEL, 'nginx').name} ip=10.244.2.2 client={shell.ip}:")
    # FLANNEL-POSTRTG masquerades pod traffic leaving the pod network.
    assert apiserver_seen(FLANNEL, shell).startswith("pod=control-plane ip=172.18.0.3 client=172.18.0.2:")


def test_flannel_files_and_iptables_as_planned(flannel):
    assert dexec("flannel-worker2", "cat", "/run/flannel/subnet.env").splitlines() == [
        "FLANNEL_NETWORK=10.244.0.0/16",
        "FLANNEL_SUBNET=10.244.2.1/24",
        "FLANNEL_MTU=1450",
        "FLANNEL_IPMASQ=true",
    ]
    assert json.loads(dexec("flannel-worker2", "cat", "/etc/cni/net.d/10-flannel.conflist"))["name"] == "cbr0"
    for node in ("control-plane", "worker2"):
        assert saved_tables(f"flannel-{node}") == planned_tables(FLANNEL, node)


# -- KTHW with host-gw routes ---------------------------------------------------------------------


def test_hostgw_node_tables(hostgw):
    assert routes("kthw-hostgw-worker-0") == [
        "default via 10.240.0.1 dev eth0 ",
        "10.200.0.0/24 dev cnio0 proto kernel scope link src 10.200.0.1 ",
        "10.200.1.0/24 via 10.240.0.21 dev eth0 ",
        "10.200.2.0/24 via 10.240.0.22 dev eth0 ",
        "10.240.0.0/24 dev eth0 proto kernel scope link src 10.240.0.20 ",
    ]
    assert routes("kthw-hostgw-controller-0") == [
        "default via 10.240.0.1 dev eth0 ",
        "10.200.0.0/24 via 10.240.0.20 dev eth0 ",
        "10.200.1.0/24 via 10.240.0.21 dev eth0 ",
        "10.200.2.0/24 via 10.240.0.22 dev eth0 ",
        "10.240.0.0/24 dev eth0 proto kernel scope link src 10.240.0.10 ",
    ]
    assert routes("kthw-hostgw-router") == ["10.240.0.0/24 dev lab0 proto kernel scope link src 10.240.0.1 "]
    busybox = pod(HOSTGW, "busybox", "worker-0")
    assert routes("kthw-hostgw-worker-0", busybox.netns) == [
        "default via 10.200.0.1 dev eth0 ",
        f"10.200.0.0/24 dev eth0 proto kernel scope link src {busybox.ip} ",
    ]


def test_hostgw_ping_goes_node_to_node_and_the_router_sees_the_pod_address(hostgw):
    busybox, nginx = pod(HOSTGW, "busybox", "worker-0"), pod(HOSTGW, "nginx", "worker-2")
    out, err = capture(HOSTGW, f"icmp and host {nginx.ip}", lambda: ping(HOSTGW, busybox, nginx))
    assert "2 packets captured" in err, err
    # The bridge plugin's ipMasq SNATs the source to the node; the destination is the pod itself.
    assert f"IP 10.240.0.20 > {nginx.ip}: ICMP echo request" in out
    assert f"IP {nginx.ip} > 10.240.0.20: ICMP echo reply" in out


def test_hostgw_services_answer_from_pods(hostgw):
    busybox = pod(HOSTGW, "busybox", "worker-0")
    nginx_names = {p.name for p in HOSTGW.pods if p.workload == "nginx"}
    answer = curl(HOSTGW, busybox, f"http://{cluster_ip(HOSTGW, 'default/nginx')}/")
    assert answer.split()[0].removeprefix("pod=") in nginx_names, answer
    # A controller (no pods, host-gw routes only) reaches pods directly too.
    target = pod(HOSTGW, "nginx", "worker-1")
    assert "1 received" in dexec("kthw-hostgw-controller-0", "ping", "-c", "1", "-W", "2", str(target.ip))


# -- converging ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["kind", "flannel"])
def test_second_up_converges_to_the_same_datapath(name, request):
    request.getfixturevalue(name)
    overlay = [["bridge", "fdb", "show", "dev", "flannel.1"], ["ip", "neigh", "show", "dev", "flannel.1"]]

    def state() -> str:
        extra = [dexec(f"{name}-worker", *argv) for argv in overlay] if name == "flannel" else []
        return "\n".join([dump(name), *extra])

    before = state()
    assert "already up and has converged" in labbuilder("up", str(ROOT / f"labs/{name}.yaml")).stdout
    assert state() == before


# -- last: nothing left behind ---------------------------------------------------------------------


def test_modes_leave_nothing_behind(host_before):
    for lab in ("kind", "flannel", "kthw-hostgw"):
        labbuilder("down", lab)
        assert lab_containers(lab) == []
    assert host_state() == host_before
    assert "flannel.1" not in sh("ip", "-o", "link").stdout
