"""Read-back derivations (observe.readback) on captured outputs: pod and node states from node
snapshots, service views from kube-proxy's rules named with the model."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv4Interface

from labbuilder.compile.kubeproxy import kube_proxy_tables, parse_service_rules
from labbuilder.compile.netfilter import parse_save, render_restore
from labbuilder.observe import readback as ins
from labbuilder.observe.snapshot import ProcessState, parse_snapshot
from labbuilder.present.kubectl import format_endpoints, format_ports
from labbuilder.spec.lab_file import resolve_file
from tests.conftest import LABS
from tests.unit.captured import (
    APISERVERS,
    CONTROLLER_0,
    GETCAP,
    IPTABLES_2018_NAT,
    IPTABLES_CURRENT,
    WORKER_0,
    WORKER_1_FLUSHED,
    WORKER_2_KILLED,
)
from tests.unit.captured import pod_states as states


# -- pods --------------------------------------------------------------------------------------
def test_healthy_pods_are_running_with_their_addresses():
    pods = states(WORKER_0, "worker-0")
    assert {name: (s.status, str(s.ip), s.ready_count, len(s.containers)) for name, s in pods.items()} == {
        "nginx": ("Running", "10.200.0.2/24", 1, 1),
        "busybox": ("Running", "10.200.0.3/24", 1, 1),  # its sandbox is its one container
        "coredns": ("Running", "10.200.0.4/24", 2, 2),  # dnsmasq + the metrics server
    }
    assert pods["nginx"].host_ip == IPv4Interface("10.240.0.20/24")
    assert pods["nginx"].started == 1795613971.0
    assert [c.name for c in pods["coredns"].containers] == ["dns", "coredns"]


def test_a_pod_without_an_address_is_not_running():
    pods = states(WORKER_1_FLUSHED, "worker-1")
    nginx = pods["nginx"]
    assert (nginx.status, nginx.ip, nginx.ready_count) == ("NotReady", None, 0)
    assert nginx.containers[0].running  # the server lives on, but serves nobody
    assert nginx.problems == ("no IPv4 address on eth0 in cni-59e09cbe-06f8-4cec-9a4b-d3e1e7b438cb",)
    assert pods["busybox"].status == "Running"


def test_dead_processes_make_pods_not_ready():
    pods = states(WORKER_2_KILLED, "worker-2")
    assert (pods["nginx"].status, pods["nginx"].ready_count) == ("NotReady", 0)
    assert pods["nginx"].problems == ("container nginx is not running",)
    assert pods["nginx"].sandbox
    assert (pods["busybox"].status, pods["busybox"].sandbox) == ("NotReady", False)
    assert "pause is not running" in pods["busybox"].problems[0]


def test_missing_netns_and_a_pid_reused_elsewhere():
    node = GETCAP.node("worker-0")
    nginx = node.pods[0]
    snap = parse_snapshot(WORKER_0)
    del snap.netns[nginx.netns]
    state = ins.pod_state(GETCAP, node, nginx, snap, None)
    assert (state.status, state.ip, state.problems) == ("NotReady", None, (f"netns {nginx.netns} is missing",))
    # After a node restart the pidfile's pid may name another process, in another netns.
    snap = parse_snapshot(WORKER_0)
    snap.processes[f"{nginx.name}.pause"] = ProcessState(f"{nginx.name}.pause", 30, 1, "S", 4026531840)
    assert ins.pod_state(GETCAP, node, nginx, snap, None).sandbox is False


def test_pods_of_a_node_that_cannot_be_read_are_unknown():
    node = GETCAP.node("worker-0")
    state = ins.pod_state(GETCAP, node, node.pods[2], None, None)
    assert (state.status, state.ready_count, len(state.containers)) == ("Unknown", 0, 2)


# -- nodes -------------------------------------------------------------------------------------
def test_node_states():
    node = GETCAP.node("controller-0")
    ready = ins.node_state(node, "running", 100.0, parse_snapshot(CONTROLLER_0))
    assert (ready.status, str(ready.ip), ready.kernel) == ("Ready", "10.240.0.10/24", "6.18.44-fc-v595")
    stopped = ins.node_state(node, "exited", 100.0, None)
    assert (stopped.status, stopped.ip, stopped.problems) == ("NotReady", None, ("container is exited",))
    bare = ins.node_state(node, "running", 100.0, parse_snapshot("@eth0\n"))
    assert bare.status == "NotReady" and bare.problems == ("no IPv4 address on eth0",)


# -- services, named with the model -----------------------------------------------------------
def test_node_ports_in_2018_jump_straight_to_the_service_chain():
    lab = replace(GETCAP, proxy_style="2018")
    tables = parse_save(render_restore(kube_proxy_tables(lab, lab.nodes[0])))
    rules = {f"{r.ref}:{r.port_name}/{r.protocol}": r for r in parse_service_rules(tables)}
    assert rules["default/nginx:/TCP"].node_port == 31088  # 2018's spn is "default/nginx:"
    views, warnings = ins.service_views(lab, list(rules.values()), "worker-0")
    assert warnings == []
    assert {v.name: format_ports(v) for v in views}["nginx"] == "80:31088/TCP"


def test_a_service_without_endpoints_is_a_reject_rule_in_filter(lab_file):
    text = (LABS / "kthw.yaml").read_text().replace("selector: {run: nginx}", "selector: {run: nothing}")
    lab = resolve_file(lab_file(text))[1].lab
    tables = parse_save(render_restore(kube_proxy_tables(lab, lab.nodes[0])))
    nginx = next(r for r in parse_service_rules(tables) if r.name == "nginx")
    assert (nginx.endpoints, nginx.chain, nginx.cluster_ip) == ((), "", IPv4Address("10.32.0.2"))
    views, _ = ins.service_views(lab, [nginx], "worker-0")
    view = next(v for v in views if v.name == "nginx")
    # The REJECT rule says no node port: the view keeps the lab's.
    assert (format_endpoints(view), format_ports(view)) == ("<none>", "80:31088/TCP")


def test_service_views_name_endpoints_with_the_model():
    views, warnings = ins.service_views(GETCAP, parse_service_rules(parse_save(IPTABLES_CURRENT)), "worker-0")
    assert warnings == []
    by_name = {v.name: v for v in views}
    assert [(v.name, v.type, v.cluster_ip) for v in views] == [
        ("kubernetes", "ClusterIP", "10.32.0.1"),
        ("kube-dns", "ClusterIP", "10.32.0.10"),
        ("nginx", "NodePort", "10.32.0.2"),
    ]
    assert format_ports(by_name["kube-dns"]) == "53/UDP,53/TCP,9153/TCP"
    assert format_endpoints(by_name["kube-dns"]) == "10.200.0.4:53,10.200.0.4:53,10.200.0.4:9153"
    endpoint = by_name["nginx"].ports[0].endpoints[1]
    assert (endpoint.target, endpoint.kind, endpoint.node) == ("nginx-hwtd4sqb6m-lzkx8", "Pod", "worker-1")
    assert by_name["kubernetes"].ports[0].endpoints[0].kind == "Node"


def test_service_views_warn_about_drift():
    rules = parse_service_rules(parse_save(IPTABLES_CURRENT))
    nginx = next(r for r in rules if r.name == "nginx")
    others = [r for r in rules if r.name != "nginx"]
    stranger = replace(nginx, name="extra", cluster_ip=IPv4Address("10.32.0.99"))
    views, warnings = ins.service_views(
        GETCAP, [*others, replace(nginx, cluster_ip=IPv4Address("10.32.0.7")), stranger], "w"
    )
    assert "w: default/nginx is programmed at 10.32.0.7, the lab planned 10.32.0.2" in warnings
    assert "w: kube-proxy rules for default/extra, a service the lab does not define" in warnings
    assert {v.name: v.cluster_ip for v in views}["extra"] == "10.32.0.99"
    views, warnings = ins.service_views(GETCAP, others, "w")
    assert warnings == ["w: no kube-proxy rules for default/nginx port 80/TCP"]
    nginx_view = next(v for v in views if v.name == "nginx")
    assert (nginx_view.programmed, nginx_view.cluster_ip) == (False, "10.32.0.2")


def test_a_service_programmed_at_two_cluster_ips_is_flagged():
    rules = parse_service_rules(parse_save(IPTABLES_CURRENT))
    dns = [r for r in rules if r.name == "kube-dns"]
    moved = [replace(dns[0], cluster_ip=IPv4Address("10.32.0.11")), *dns[1:]]
    others = [r for r in rules if r.name != "kube-dns"]
    _, warnings = ins.service_views(GETCAP, [*others, *moved], "w")
    assert warnings == ["w: kube-system/kube-dns has rules for several cluster IPs: 10.32.0.10, 10.32.0.11"]


def test_apiservers_lab_parses_with_its_own_model():
    views, warnings = ins.service_views(APISERVERS, parse_service_rules(parse_save(IPTABLES_2018_NAT)), "worker-0")
    assert warnings == []
    kubernetes = next(v for v in views if v.name == "kubernetes")
    assert [e.target for e in kubernetes.ports[0].endpoints] == ["controller-0", "controller-1", "controller-2"]
