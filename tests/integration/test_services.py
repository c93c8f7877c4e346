"""Services the kube-proxy way, with real packets: seeds 003 and 004 followed inside the lab."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from labbuilder.compile.netfilter import normalise, parse_save
from labbuilder.compile.ops import Iptables
from labbuilder.compile.plan import compile_plan
from labbuilder.spec.load import load
from labbuilder.spec.resolve import build_model
from tests.integration.conftest import ROOT, bring_up, dexec, pod_exec

pytestmark = pytest.mark.docker
KTHW = build_model(load(str(ROOT / "labs/kthw.yaml"))).lab
APISERVERS = build_model(load(str(ROOT / "labs/apiservers.yaml"))).lab
BODY = re.compile(r"pod=(\S+) ip=(\S+) client=(\S+):(\d+)")


@pytest.fixture(scope="module")
def kthw(host_before) -> Iterator[str]:
    yield from bring_up(str(ROOT / "labs/kthw.yaml"), "kthw")


@pytest.fixture(scope="module")
def apiservers(host_before) -> Iterator[str]:
    yield from bring_up(str(ROOT / "labs/apiservers.yaml"), "apiservers")


def curl(container: str, netns: str | None, url: str, *options: str) -> re.Match[str]:
    argv = ["curl", "-s", "-m", "3", *options, url]
    out = pod_exec(container, netns, *argv) if netns else dexec(container, *argv)
    match = BODY.search(out)
    assert match, f"no answer from {url}: {out!r}"
    return match


def service(lab, name: str):
    return next(s for s in lab.services if s.name == name)


def test_cluster_ip_balances_over_every_endpoint(kthw):
    # An nginx pod as the client: it also reaches itself (hairpin, masqueraded by KUBE-SEP).
    client = next(p for p in KTHW.node("worker-1").pods if p.workload == "nginx")
    nginx = service(KTHW, "nginx")
    expected = {e.target for e in nginx.endpoints["80"]}
    seen: set[str] = set()
    for _ in range(60):  # 3 endpoints at random: all seen within 60 tries unless one is never chosen
        seen.add(curl("kthw-worker-1", client.netns, f"http://{nginx.cluster_ip}/").group(1))
        if seen == expected:
            break
    assert seen == expected


def test_ping_to_a_cluster_ip_gets_no_answer_while_curl_works(kthw):
    client = KTHW.node("worker-0").pods[0]
    ip = service(KTHW, "nginx").cluster_ip
    ping = pod_exec("kthw-worker-0", client.netns, "ping", "-c", "1", "-W", "1", str(ip), check=False)
    assert "0 received" in ping
    assert curl("kthw-worker-0", client.netns, f"http://{ip}/").group(1).startswith("nginx-")


def test_node_port_from_the_router_reaches_pods_on_other_workers_with_dnat(kthw):
    pods = {p.name: p for p in KTHW.pods}
    for _ in range(60):
        answer = curl("kthw-router", None, "http://10.240.0.20:31088/")
        if pods[answer.group(1)].node != "worker-0":
            break
    pod = pods[answer.group(1)]
    assert pod.node != "worker-0", "no answer came from another worker"
    # kube-proxy's masquerade for external traffic: the pod saw worker-0, not the router.
    assert answer.group(3) == "10.240.0.20"
    conntrack = dexec("kthw-worker-0", "conntrack", "-L", "-p", "tcp", "--orig-port-dst", "31088")
    assert re.search(
        rf"src=10\.240\.0\.1 dst=10\.240\.0\.20 sport=\d+ dport=31088 .*src={pod.ip} dst=10\.240\.0\.20 "
        r"sport=80",
        conntrack,
    ), conntrack


def test_cluster_dns_answers_with_cluster_ips(kthw):
    client = KTHW.node("worker-2").pods[0]
    for name, ip in (
        ("nginx.default.svc.cluster.local", "10.32.0.2"),
        ("nginx", "10.32.0.2"),
        ("kubernetes.default", "10.32.0.1"),
        ("kube-dns.kube-system.svc.cluster.local", "10.32.0.10"),
    ):
        out = pod_exec("kthw-worker-2", client.netns, "getent", "hosts", name)
        assert out.split()[0] == ip, (name, out)
    resolv = dexec("kthw-worker-2", "cat", f"/etc/netns/{client.netns}/resolv.conf")
    assert "nameserver 10.32.0.10" in resolv


def test_node_tables_parse_back_to_exactly_the_plan(kthw):
    plan = compile_plan(KTHW)
    for node in KTHW.nodes:
        [payload] = [op.payload for op in plan.steps[node.name] if isinstance(op, Iptables)]
        saved = dexec(f"kthw-{node.name}", "iptables-save")
        assert normalise(parse_save(saved)) == normalise(parse_save(payload)), node.name


def test_kubernetes_service_with_client_ip_affinity_sticks_to_one_apiserver(apiservers):
    saved = dexec("apiservers-worker-0", "iptables-save", "-t", "nat")
    for chain in (
        "KUBE-SVC-NPX46M4PTMTKRN6Y",
        "KUBE-SEP-23Y66C2VAJ3WDEMI",
        "KUBE-SEP-47TYMEKETDMXSVAN",
        "KUBE-SEP-CZKGMRCAIW3ENCXY",
    ):
        assert f":{chain} - " in saved
    assert "--probability 0.33332999982" in saved and "--probability 0.50000000000" in saved
    assert "-j DNAT --to-destination 172.16.0.11:6443" in saved
    client = APISERVERS.node("worker-0").pods[0]
    # The apiservers speak TLS; their X-Labbuilder-Server header says which one answered.
    url = "https://192.168.255.1/healthz"
    answers = {curl("apiservers-worker-0", client.netns, url, "-k", "-D", "-").group(1) for _ in range(12)}
    assert len(answers) == 1 and answers.pop().startswith("controller-")
    ping = pod_exec("apiservers-worker-0", client.netns, "ping", "-c", "1", "-W", "1", "192.168.255.1", check=False)
    assert "0 received" in ping
