"""Seeing a running lab: packet traces read from the kernel, the graph of a running lab, and the
rendered script, run for real, against `up`."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from labbuilder.engine.runtime import Engine
from tests.integration.conftest import ROOT, bring_up, dexec, dump, host_state, lab_containers, labbuilder, sh

pytestmark = pytest.mark.docker
LAB = "seekthw"


@pytest.fixture(scope="module")
def seekthw(host_before) -> Iterator[str]:
    yield from bring_up(str(ROOT / "labs/kthw.yaml"), LAB)


@pytest.fixture(scope="module")
def lab(seekthw):
    return Engine().lab(LAB).model()


def trace(*args: str) -> dict:
    return json.loads(labbuilder("trace", LAB, *args, "-o", "json").stdout)


def hop_at(result: dict, label: str) -> dict:
    return next(h for h in result["hops"] if h["place"]["label"] == label)


def client(lab, node: str):
    return next(p for p in lab.node(node).pods if p.workload == "busybox")


def test_pod_to_cluster_ip_shows_the_dnat_to_an_endpoint_and_every_hop_across_nodes(lab):
    source = client(lab, "worker-0")
    nginx = next(s for s in lab.services if s.name == "nginx")
    pods = {str(p.ip): p for p in lab.pods}
    for _ in range(20):  # kube-proxy picks an endpoint at random: 2 in 3 are on another node
        result = trace(f"pod/{source.name}", "service/nginx")
        node = hop_at(result, "node worker-0")
        endpoint = pods[node["dnat"].split(":")[0]]
        if endpoint.node != "worker-0":
            break
    assert endpoint.node != "worker-0" and endpoint.workload == "nginx"
    assert result["target"] == {
        "ip": str(nginx.cluster_ip),
        "port": 80,
        "protocol": "tcp",
        "label": "service default/nginx",
    }
    kinds = [(h["place"]["label"], h["kind"]) for h in result["hops"]]
    assert kinds == [
        (f"pod default/{source.name} on worker-0", "sends"),
        ("node worker-0", "forwards"),
        ("router", "forwards"),
        (f"node {endpoint.node}", "forwards"),
        (f"pod default/{endpoint.name} on {endpoint.node}", "delivers"),
    ]
    rules = [hit["rule"] for visit in node["visits"] for hit in visit["hits"]]
    svc_jump = next(r for r in rules if r.startswith("-A KUBE-SERVICES") and "-j KUBE-SVC-" in r)
    assert f"-d {nginx.cluster_ip}/32" in svc_jump and "--dport 80" in svc_jump
    sep = re.search(r"-j (KUBE-SEP-\w+)", next(r for r in rules if r.startswith("-A KUBE-SVC-") and "KUBE-SEP-" in r))
    assert sep and any(r.startswith(f"-A {sep.group(1)} ") and f"--to-destination {endpoint.ip}:80" in r for r in rules)
    assert node["dnat"] == f"{endpoint.ip}:80" and node["snat"] == str(lab.node("worker-0").ip)  # ipMasq
    assert "via 10.240.0.1 dev eth0" in node["route"]
    assert f"via {lab.node(endpoint.node).ip} dev lab0" in hop_at(result, "router")["route"]
    assert result["outcome"] == "answered"
    assert f"pod={endpoint.name} ip={endpoint.ip} client={lab.node('worker-0').ip}:" in result["detail"]
    text = labbuilder("trace", LAB, f"pod/{source.name}", "service/nginx").stdout
    assert "⇒ DNAT: destination becomes" in text and "KUBE-SEP-" in text and "result: answered" in text


@pytest.mark.parametrize("form", ["{name}", "pod/{name}", "busybox@worker-0", "worker-0/busybox", "{ip}"])
def test_trace_takes_a_pod_in_every_form_of_the_one_grammar(lab, form):
    """`labbuilder trace kthw busybox-<hash> service/nginx` — a bare pod name is a place too."""
    source = client(lab, "worker-0")
    result = trace(form.format(name=source.name, ip=source.ip), "service/nginx")
    assert result["source"]["label"] == f"pod default/{source.name} on worker-0"
    assert result["outcome"] == "answered" and result["hops"][-1]["kind"] == "delivers"


def test_ping_to_a_cluster_ip_shows_why_nobody_answers(lab):
    source = client(lab, "worker-1")
    ip = next(s for s in lab.services if s.name == "nginx").cluster_ip
    result = trace(f"pod/{source.name}", str(ip))
    assert result["target"]["protocol"] == "icmp"
    assert not any(h["dnat"] for h in result["hops"])
    last = result["hops"][-1]
    assert (last["place"]["label"], last["kind"]) == ("router", "drops")
    assert "Network is unreachable" in last["route"]
    assert (
        result["outcome"] == "unreachable"
        and "10.240.0.1" in result["detail"]
        and "net unreachable" in result["detail"]
    )
    assert any("no rule DNATed the packet" in note and "80/TCP" in note for note in result["notes"])


def test_after_a_route_is_deleted_in_the_router_the_trace_shows_where_the_packet_dies(lab):
    source, target = client(lab, "worker-0"), next(p for p in lab.node("worker-1").pods if p.workload == "nginx")
    router = f"{LAB}-router"
    dexec(router, "ip", "route", "del", str(lab.node("worker-1").pod_cidr))
    try:
        broken = trace(f"pod/{source.name}", f"pod/{target.name}:80")
    finally:
        dexec(router, "ip", "route", "replace", str(lab.node("worker-1").pod_cidr), "via", str(lab.node("worker-1").ip))
    last = broken["hops"][-1]
    assert (last["place"]["label"], last["kind"]) == ("router", "drops")
    assert "Network is unreachable" in last["route"] and broken["outcome"] == "unreachable"
    assert any("died in router: no route" in note for note in broken["notes"])
    fixed = trace(f"pod/{source.name}", f"pod/{target.name}:80")
    assert fixed["hops"][-1]["place"]["label"] == f"pod default/{target.name} on worker-1"
    assert fixed["outcome"] == "answered"


def test_a_trace_leaves_no_rule_table_or_process_behind(lab):
    result = trace(f"pod/{client(lab, 'worker-2').name}", "node/controller-0:6443")
    # The apiserver speaks TLS: the probe's plain HTTP gets Go's answer to that, from controller-0's :6443.
    assert result["outcome"] == "answered" and "HTTP request to an HTTPS server" in result["detail"]
    script = (
        "for n in - $(ip netns list | cut -d' ' -f1); do "
        "if [ $n = - ]; then iptables-save; else ip netns exec $n iptables-save; fi; done; "
        "ls /run/labbuilder; ps -eo args"
    )
    for container in lab_containers(LAB):
        after = dexec(container, "sh", "-c", script)
        assert "labbuilder-trace" not in after and "xtables-monitor" not in after and "TRACE" not in after
        assert not re.search(r"^\*(raw|mangle)", after, re.M), container


def test_graph_of_the_running_lab_names_its_own_pods(lab, tmp_path: Path):
    out = tmp_path / "seekthw.html"
    labbuilder("graph", LAB, "--output", str(out))
    page = out.read_text()
    assert all(pod.name in page and pod.netns in page for pod in lab.pods)
    mermaid = labbuilder("graph", LAB, "-o", "mermaid").stdout
    assert all(pod.name in mermaid for pod in lab.pods)


def test_the_rendered_script_builds_the_same_lab_as_up_and_down_removes_it(host_before, tmp_path: Path):
    name = "renderkthw"
    if lab_containers(name):
        pytest.fail(f"a lab named {name} is already on this host: `labbuilder down {name}` first")
    expected = 0
    try:
        labbuilder("up", str(ROOT / "labs/kthw.yaml"), "--name", name, "-q")
        expected = len(lab_containers(name))
        built_by_up = dump(name)
        labbuilder("down", name)
        script = tmp_path / "renderkthw.sh"
        labbuilder("render", str(ROOT / "labs/kthw.yaml"), "--name", name, "--output", str(script))
        sh("sh", str(script), timeout=300)
        assert dump(name) == built_by_up
        assert labbuilder("status", name).returncode == 0
        assert Engine().lab(name).model().name == name  # the spec copy is where labbuilder looks for it
    finally:
        removed = labbuilder("down", name, check=False)
    assert f"removed {expected} containers" in removed.stdout
    assert lab_containers(name) == []
    assert host_state() == host_before
