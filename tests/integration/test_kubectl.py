"""`get` and `exec` on a real KTHW lab: what they print is read back from the lab, not the file."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from labbuilder.spec.lab_file import resolve_file
from tests.integration.conftest import ROOT, bring_up, dexec, labbuilder, pod_exec

pytestmark = pytest.mark.docker
LAB = "getkthw"
MODEL = resolve_file(str(ROOT / "labs/kthw.yaml"), LAB)[1].lab


@pytest.fixture(scope="module")
def kthw(host_before) -> Iterator[str]:
    yield from bring_up(str(ROOT / "labs/kthw.yaml"), LAB)


def table(*args: str) -> list[dict[str, str]]:
    """Run `labbuilder get ...` and split its kubectl columns (3+ spaces apart) into dicts."""
    lines = labbuilder("get", *args).stdout.splitlines()
    headers = re.split(r"\s{2,}", lines[0].strip())
    rows = []
    for line in lines[1:]:
        cells = re.split(r"\s{2,}", line.strip())
        assert len(cells) == len(headers), line
        rows.append(dict(zip(headers, cells, strict=True)))
    return rows


def pod(node: str, workload: str):
    return next(p for p in MODEL.node(node).pods if p.workload == workload)


def test_get_pods_wide_lists_every_pod_running_with_its_ip_and_node(kthw):
    rows = {r["NAME"]: r for r in table("pods", LAB, "-o", "wide")}
    expected = {p.name: p for p in MODEL.pods if p.namespace == "default"}
    assert set(rows) == set(expected)
    for name, p in expected.items():
        assert (rows[name]["STATUS"], rows[name]["READY"]) == ("Running", "1/1"), rows[name]
        assert (rows[name]["IP"], rows[name]["NODE"]) == (str(p.ip), p.node)
    everywhere = {r["NAME"]: r for r in table("pods", LAB, "-A")}
    dns = next(p for p in MODEL.pods if p.namespace == "kube-system")
    assert everywhere[dns.name]["NAMESPACE"] == "kube-system" and everywhere[dns.name]["READY"] == "2/2"


def test_get_nodes_wide_reads_each_node_address(kthw):
    rows = {r["NAME"]: r for r in table("nodes", LAB, "-o", "wide")}
    assert set(rows) == {n.name for n in MODEL.nodes}
    for node in MODEL.nodes:
        row = rows[node.name]
        assert (row["STATUS"], row["INTERNAL-IP"], row["POD-CIDR"]) == (
            "Ready",
            str(node.ip),
            str(node.pod_cidr or "<none>"),
        )
    assert rows["controller-0"]["ROLES"] == "control-plane" and rows["worker-0"]["ROLES"] == "<none>"


def test_get_services_shows_cluster_ips_and_the_node_port(kthw):
    rows = {r["NAME"]: r for r in table("services", LAB)}
    assert set(rows) == {"kubernetes", "nginx"}
    assert rows["nginx"]["TYPE"] == "NodePort" and rows["nginx"]["PORT(S)"] == "80:31088/TCP"
    assert rows["nginx"]["CLUSTER-IP"] == "10.32.0.2" and rows["kubernetes"]["CLUSTER-IP"] == "10.32.0.1"
    assert rows["kubernetes"]["PORT(S)"] == "443/TCP" and rows["nginx"]["EXTERNAL-IP"] == "<none>"
    everywhere = {r["NAME"]: r for r in table("svc", LAB, "-A")}
    assert everywhere["kube-dns"]["CLUSTER-IP"] == "10.32.0.10"
    assert everywhere["kube-dns"]["PORT(S)"] == "53/UDP,53/TCP,9153/TCP"


def test_get_endpoints_lists_the_pod_ips(kthw):
    rows = {r["NAME"]: r for r in table("endpoints", LAB)}
    nginx = sorted(f"{p.ip}:80" for p in MODEL.pods if p.workload == "nginx")
    assert sorted(rows["nginx"]["ENDPOINTS"].split(",")) == nginx
    assert rows["kubernetes"]["ENDPOINTS"] == "10.240.0.10:6443,10.240.0.11:6443,10.240.0.12:6443"


def test_json_output_parses_and_carries_the_addresses(kthw):
    pods = json.loads(labbuilder("get", "pods", LAB, "-A", "-o", "json").stdout)
    assert pods["kind"] == "List"
    assert {i["metadata"]["name"]: i["status"]["podIP"] for i in pods["items"]} == {
        p.name: str(p.ip) for p in MODEL.pods
    }
    nginx = json.loads(labbuilder("get", "svc", LAB, "nginx", "-o", "json").stdout)
    assert nginx["kind"] == "Service" and nginx["spec"]["ports"][0]["nodePort"] == 31088
    nodes = json.loads(labbuilder("get", "nodes", LAB, "-o", "json").stdout)
    assert len(nodes["items"]) == len(MODEL.nodes)


def test_exec_in_a_pod_by_prefix_sees_the_pod_routes(kthw):
    nginx = pod("worker-0", "nginx")
    out = labbuilder("exec", LAB, f"worker-0/{nginx.name[:7]}", "--", "ip", "route").stdout
    assert "default via 10.200.0.1 dev eth0" in out
    assert f"src {nginx.ip}" in out
    addresses = labbuilder("exec", LAB, nginx.name, "--", "ip", "-o", "-4", "addr", "show", "dev", "eth0").stdout
    assert f"inet {nginx.ip}/24" in addresses


def test_exec_in_a_node_passes_the_exit_status_through(kthw):
    assert "10.240.0.20/24" in labbuilder("exec", LAB, "worker-0", "--", "ip", "-o", "-4", "addr").stdout
    assert labbuilder("exec", LAB, "worker-0", "--", "sh", "-c", "exit 3", check=False).returncode == 3
    assert "10.200.1.0/24 via 10.240.0.21" in labbuilder("exec", LAB, "router", "--", "ip", "route").stdout


def test_exec_with_an_ambiguous_or_unknown_pod_is_a_clear_error(kthw):
    ambiguous = labbuilder("exec", LAB, "nginx", "--", "true", check=False)
    assert ambiguous.returncode == 1
    assert "'nginx' matches 3 pods" in ambiguous.stderr and "Traceback" not in ambiguous.stderr
    for p in MODEL.pods:
        if p.workload == "nginx":
            assert f"{p.name}@{p.node}" in ambiguous.stderr  # each candidate as a reference that picks it
    unknown = labbuilder("exec", LAB, "worker-0/nope", "--", "true", check=False)
    assert unknown.returncode == 1 and "no pod 'nope' on worker-0" in unknown.stderr
    missing = labbuilder("get", "pods", "no-such-lab", check=False)
    assert missing.returncode == 1 and "no lab named no-such-lab" in missing.stderr


def test_get_reads_back_what_was_broken_inside_the_lab(kthw):
    """Changes made inside the lab show in `get` — then undone, they show as healthy again."""
    victim = pod("worker-1", "nginx")
    pod_exec(f"{LAB}-worker-1", victim.netns, "ip", "addr", "flush", "dev", "eth0")
    rows = {r["NAME"]: r for r in table("pods", LAB, "-o", "wide")}
    assert (rows[victim.name]["STATUS"], rows[victim.name]["IP"], rows[victim.name]["READY"]) == (
        "NotReady",
        "<none>",
        "0/1",
    )
    assert rows[pod("worker-0", "nginx").name]["STATUS"] == "Running"
    why = json.loads(labbuilder("get", "pods", LAB, victim.name, "-o", "json").stdout)
    assert "no IPv4 address on eth0" in why["status"]["conditions"][0]["message"]

    pod_exec(f"{LAB}-worker-1", victim.netns, "ip", "addr", "add", f"{victim.ip}/24", "dev", "eth0")
    pod_exec(f"{LAB}-worker-1", victim.netns, "ip", "route", "add", "default", "via", "10.200.1.1")
    rows = {r["NAME"]: r for r in table("pods", LAB, "-o", "wide")}
    assert (rows[victim.name]["STATUS"], rows[victim.name]["IP"]) == ("Running", str(victim.ip))

    # A dead server (worker-2's podserver answers for its pods): the pod's READY drops, its STATUS with it.
    server = pod("worker-2", "nginx")
    dexec(f"{LAB}-worker-2", "sh", "-c", "kill $(cat /run/labbuilder/pids/worker-2.podserver.pid)")
    rows = {r["NAME"]: r for r in table("pods", LAB)}
    assert (rows[server.name]["STATUS"], rows[server.name]["READY"]) == ("NotReady", "0/1")


def test_endpoints_are_read_from_the_node_asked_for(kthw):
    """Delete one KUBE-SVC → KUBE-SEP jump on worker-0: its endpoints change, worker-1's don't."""
    gone = pod("worker-2", "nginx")
    rules = dexec(f"{LAB}-worker-0", "iptables", "-t", "nat", "-S")
    [jump] = [line for line in rules.splitlines() if line.startswith("-A KUBE-SVC-") and f"-> {gone.ip}:80" in line]
    dexec(f"{LAB}-worker-0", "sh", "-c", "iptables -t nat " + jump.replace("-A ", "-D ", 1))
    on_0 = {r["NAME"]: r for r in table("endpoints", LAB, "--node", "worker-0")}
    on_1 = {r["NAME"]: r for r in table("endpoints", LAB, "--node", "worker-1")}
    assert f"{gone.ip}:80" not in on_0["nginx"]["ENDPOINTS"]
    assert f"{gone.ip}:80" in on_1["nginx"]["ENDPOINTS"]
