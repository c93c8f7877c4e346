"""The rest of the Service API with real packets (labs/services.yaml): refused at once without
endpoints, the client address kept under externalTrafficPolicy Local and dropped on a node without
an endpoint, LoadBalancer and external IPs reached from the router, source ranges, headless, named
target ports."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator

import pytest

from labbuilder.spec.lab_file import resolve_file
from tests.integration.conftest import ROOT, bring_up, dexec, labbuilder, sh

pytestmark = pytest.mark.docker
LAB = "ka-svc"
MODEL = resolve_file(str(ROOT / "labs/services.yaml"), LAB)[1].lab
BODY = re.compile(r"pod=(\S+) ip=(\S+) client=(\S+):(\d+)")
CLIENT = next(p for p in MODEL.pods if p.workload == "client")  # on worker-1


@pytest.fixture(scope="module")
def lab(host_before) -> Iterator[str]:
    yield from bring_up(str(ROOT / "labs/services.yaml"), LAB)


def service(name: str):
    return next(s for s in MODEL.services if s.name == name)


def curl(where: str, url: str, netns: str | None = None, wait: float = 3) -> tuple[int, str, float]:
    """(curl's exit code, its output, seconds taken) from a container, or a pod's netns in it."""
    argv = ["docker", "exec", f"{LAB}-{where}"] + (["ip", "netns", "exec", netns] if netns else [])
    start = time.monotonic()
    result = subprocess.run([*argv, "curl", "-s", "-m", str(wait), url], capture_output=True, text=True, timeout=30)
    return result.returncode, result.stdout, time.monotonic() - start


def answer(where: str, url: str, netns: str | None = None) -> re.Match[str]:
    code, out, _ = curl(where, url, netns)
    match = BODY.search(out)
    assert code == 0 and match, f"{url} from {where}: exit {code}, {out!r}"
    return match


def test_a_service_without_endpoints_is_refused_at_once(lab):
    code, _, took = curl("worker-1", f"http://{service('empty').cluster_ip}/", CLIENT.netns, wait=5)
    assert code == 7 and took < 2, (code, took)  # connection refused (REJECT), not a 5 s timeout
    rules = dexec(f"{LAB}-worker-1", "iptables-save", "-t", "filter")
    assert '--comment "default/empty has no endpoints"' in rules


def test_local_node_port_keeps_the_client_address_and_drops_where_no_pod_runs(lab):
    worker0, worker1 = (str(MODEL.node(n).ip) for n in ("worker-0", "worker-1"))
    seen = answer("router", f"http://{worker0}:30080/")
    assert (seen.group(1), seen.group(3)) == (service("solo").endpoints["80"][0].target, str(MODEL.network.gateway))
    code, _, took = curl("router", f"http://{worker1}:30080/", wait=2)
    assert code == 28 and took >= 1.9  # dropped: curl waits out its timeout
    # A Cluster-policy service seen the same way is masqueraded by the node the router sends it to,
    # to that node's address on the way to the pod: its bridge's for a pod of its own, eth0's else.
    shop_ip = str(service("shop").load_balancer_ips[0])
    shop = answer("router", f"http://{shop_ip}/")
    route = dexec(f"{LAB}-router", "ip", "route", "show", shop_ip).split()
    entry = next(n for n in MODEL.nodes if str(n.ip) == route[route.index("via") + 1])
    pod = next(p for p in MODEL.pods if p.name == shop.group(1))
    assert shop.group(3) == str(entry.pod_gateway if pod.node == entry.name else entry.ip)


def test_load_balancer_ips_answer_from_the_router(lab):
    shop, local = service("shop"), service("solo-lb")
    assert [str(s.load_balancer_ips[0]) for s in (shop, local)] == ["10.240.0.201", "10.240.0.203"]
    assert answer("router", "http://10.240.0.201/").group(1) in {e.target for e in shop.endpoints["80"]}
    assert answer("router", "http://10.240.0.203/").group(3) == str(MODEL.network.gateway)  # Local: unmasqueraded
    routes = dexec(f"{LAB}-router", "ip", "route")
    assert "10.240.0.203 via 10.240.0.20" in routes  # the only node with a solo pod takes it


def test_source_ranges_let_the_router_in_and_keep_pods_out(lab):
    assert answer("router", "http://10.240.0.202/")
    code, _, _ = curl("worker-1", "http://10.240.0.202/", CLIENT.netns, wait=2)
    assert code == 28
    nat = dexec(f"{LAB}-worker-1", "iptables-save", "-t", "nat")
    assert '-s 10.240.0.0/24 -m comment --comment "default/guarded loadbalancer IP" -j KUBE-EXT-' in nat


def test_an_external_ip_answers_from_the_router(lab):
    assert answer("router", "http://192.0.2.10/").group(1) == service("ext").endpoints["80"][0].target


def test_headless_resolves_by_dns_but_has_no_rules(lab):
    headless = service("echo-headless")
    out = dexec(f"{LAB}-worker-1", "ip", "netns", "exec", CLIENT.netns, "nslookup", "echo-headless")
    assert sorted(re.findall(r"Address: (10\.200\.\S+)", out)) == sorted(str(e.ip) for e in headless.endpoints["80"])
    for node in ("worker-0", "worker-1"):
        assert "echo-headless" not in dexec(f"{LAB}-{node}", "iptables-save")


def test_two_ports_with_named_target_ports_reach_each_pods_own_number(lab):
    echo = service("echo")
    by_pod = {e.target: e.port for e in echo.endpoints["http"]}
    assert sorted(set(by_pod.values())) == [8000, 8080]  # "http" is 8000 in the old pod
    seen: set[str] = set()
    for _ in range(40):
        seen.add(answer("worker-1", f"http://{echo.cluster_ip}/", CLIENT.netns).group(1))
        if seen == set(by_pod):
            break
    assert seen == set(by_pod)
    assert answer("worker-1", f"http://{echo.cluster_ip}:9100/", CLIENT.netns)
    endpoints = labbuilder("get", "endpoints", LAB, "-o", "wide").stdout
    assert "10.200.1.3:8000" in endpoints and "10.200.1.3:9000" in endpoints


def test_get_services_shows_external_ips_and_the_lab_checks_pass(lab):
    table = labbuilder("get", "services", LAB).stdout
    rows = {line.split()[0]: line.split() for line in table.splitlines()[1:]}
    assert rows["shop"][1:5] == ["LoadBalancer", str(service("shop").cluster_ip), "10.240.0.201", "80:30000/TCP"]
    assert rows["ext"][3] == "192.0.2.10" and rows["empty"][3] == "<none>"
    result = labbuilder("check", LAB, check=False)
    assert result.returncode == 0 and ", 0 failed" in result.stdout, result.stdout
    assert labbuilder("diff", LAB, check=False).returncode == 0
    assert sh("docker", "exec", f"{LAB}-router", "ip", "route", "get", "192.0.2.10").returncode == 0
