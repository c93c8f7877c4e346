"""kube-proxy's nftables mode on the real engine: the KTHW lab with `kubeProxy: {mode: nftables}`.

One lab for the module. The node's `nft list table ip kube-proxy` must read back as exactly the
table the plan renders; no kube-proxy rule may be left in iptables; a learner's change to the
table (a map element deleted, a chain flushed) shows in `diff` and `reset` puts it back; `trace`
names the service and endpoint chains and the DNAT.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from labbuilder.compile.kubeproxy.names import nft_port_base
from labbuilder.compile.nft import listed, parse_listing, parse_transaction
from labbuilder.compile.ops import Nftables
from labbuilder.compile.plan import compile_plan
from labbuilder.spec.lab_file import resolve_file
from tests.integration.conftest import ROOT, bring_up, dexec, labbuilder, pod_exec

pytestmark = pytest.mark.docker
LAB = "kn-nft"
FILE = str(ROOT / "labs/kthw-nftables.yaml")
MODEL = resolve_file(FILE, LAB)[1].lab
PLAN = compile_plan(MODEL)
NGINX = next(s for s in MODEL.services if s.name == "nginx")
NGINX_BASE = nft_port_base("default/nginx", "TCP", "")


@pytest.fixture(scope="module")
def lab(host_before) -> Iterator[str]:
    yield from bring_up(FILE, LAB)


def planned_table(node: str):
    op = next(op for op in PLAN.steps[node] if isinstance(op, Nftables))
    table = parse_transaction(op.payload)
    assert table is not None
    return listed(table)


def test_kthw_checks_pass_in_nftables_mode(lab):
    result = labbuilder("check", lab, check=False)
    assert result.returncode == 0, result.stdout
    assert "0 failed" in result.stdout


def test_each_node_lists_exactly_the_planned_table(lab):
    for node in MODEL.nodes:
        text = dexec(f"{lab}-{node.name}", "nft", "list", "table", "ip", "kube-proxy")
        assert parse_listing(text) == planned_table(node.name), node.name
        assert f"elements = {{ {node.ip} }}" in text  # nodeport-ips: the node's own address only


def test_no_kube_proxy_rules_in_iptables(lab):
    saved = dexec(f"{lab}-worker-0", "iptables-save")
    assert not re.search(r"KUBE-(SVC|SEP|EXT|SERVICES|NODEPORTS|MARK-MASQ)", saved)
    assert "CNI-" in saved  # the bridge plugin's ipMasq is not kube-proxy's: it stays in iptables


def test_get_endpoints_reads_the_nftables_table(lab):
    out = labbuilder("get", "endpoints", lab).stdout
    line = next(row for row in out.splitlines() if row.startswith("nginx "))
    for ep in NGINX.endpoints["80"]:
        assert f"{ep.ip}:{ep.port}" in line


def test_trace_names_the_service_and_endpoint_chains_and_the_dnat(lab):
    busybox = next(p for p in MODEL.node("worker-0").pods if p.name.startswith("busybox"))
    text = labbuilder("trace", lab, f"pod/{busybox.name}", "service/nginx:80").stdout
    assert "kube-proxy services: ip daddr . meta l4proto . th dport vmap @service-ips  ⇒ goto service-" in text
    assert re.search(r"kube-proxy service-\w{8}-default/nginx/tcp/: numgen random mod 3 vmap", text)
    found = re.search(
        r"kube-proxy endpoint-\w{8}-default/nginx/tcp/__([\d.]+)/80: meta l4proto tcp dnat to \1:80", text
    )
    assert found, text
    assert f"DNAT {NGINX.cluster_ip} → {found[1]}:80" in text
    assert dexec(f"{lab}-worker-0", "nft", "list", "tables").split() == [
        "table",
        "ip",
        "nat",
        "table",
        "ip",
        "kube-proxy",
    ]


def test_a_deleted_element_and_a_flushed_chain_are_seen_and_repaired(lab):
    w0, w1 = f"{lab}-worker-0", f"{lab}-worker-1"
    key = f"{NGINX.cluster_ip} . tcp . 80"
    dexec(w0, "nft", "delete", "element", "ip", "kube-proxy", "service-ips", f"{{ {key} }}")
    endpoint = next(c for c in planned_table("worker-1").chains if c.startswith("endpoint-") and "/nginx/" in c)
    dexec(w1, "nft", "flush", "chain", "ip", "kube-proxy", endpoint)
    busybox = next(p for p in MODEL.node("worker-0").pods if p.name.startswith("busybox"))
    url = f"http://{NGINX.cluster_ip}/"
    refused = pod_exec(w0, busybox.netns, "curl", "-s", "-m", "2", "-o", "/dev/null", url, check=False)
    assert refused == ""  # nothing answers the ClusterIP on worker-0 any more

    diff = labbuilder("diff", lab, check=False)
    assert diff.returncode == 1
    service = f"goto service-{NGINX_BASE}"
    assert f"worker-0: nftables ip kube-proxy: map service-ips element {key} : {service} missing" in diff.stdout
    assert f"worker-1: nftables ip kube-proxy: chain {endpoint} changed" in diff.stdout
    stray = "10.32.0.99 . tcp . 80 : goto reject-chain"  # a learner's own element
    dexec(w1, "nft", "add", "element", "ip", "kube-proxy", "service-ips", f"{{ {stray} }}")
    assert (
        f"worker-1: nftables ip kube-proxy: map service-ips element {stray} added"
        in labbuilder("diff", lab, check=False).stdout
    )

    repaired = labbuilder("reset", lab).stdout
    assert f"worker-0: nftables ip kube-proxy: map service-ips element {key} : {service} restored" in repaired
    assert f"worker-1: stray nftables ip kube-proxy: map service-ips element {stray} removed" in repaired
    assert labbuilder("diff", lab).stdout.strip() == f"lab {lab}: pristine"
    for node in ("worker-0", "worker-1"):
        text = dexec(f"{lab}-{node}", "nft", "list", "table", "ip", "kube-proxy")
        assert parse_listing(text) == planned_table(node)
    answer = pod_exec(w0, busybox.netns, "curl", "-s", "-m", "3", url)
    assert "pod=nginx" in answer


def test_a_deleted_table_is_missing_and_comes_back(lab):
    dexec(f"{lab}-worker-2", "nft", "delete", "table", "ip", "kube-proxy")
    assert "worker-2: nftables ip kube-proxy missing" in labbuilder("diff", lab, check=False).stdout
    labbuilder("reset", lab)
    assert labbuilder("diff", lab).stdout.strip() == f"lab {lab}: pristine"


# -- the Service API in nftables mode, with packets ---------------------------------------------------
# labs/services.yaml (LoadBalancer, source ranges, traffic policies, externalIPs, no endpoints, named
# ports) with kube-proxy in nftables mode: its own checks must pass as they do in iptables mode.
SVC_LAB = "kn-svc"
SVC_TEXT = (
    (ROOT / "labs/services.yaml")
    .read_text()
    .replace("\nname: services\n", "\nname: services\nkubeProxy: {mode: nftables}\n")
)


@pytest.fixture(scope="module")
def svc_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("kn") / "services-nftables.yaml"
    path.write_text(SVC_TEXT)
    return path


@pytest.fixture(scope="module")
def svc_lab(host_before, svc_file) -> Iterator[str]:
    yield from bring_up(str(svc_file), SVC_LAB)


def test_the_services_lab_passes_its_checks_in_nftables_mode(svc_lab):
    """LB IPs from the router, source ranges, Local policies keeping the client address and
    dropping where no endpoint is, externalIPs, a refused service, named target ports."""
    result = labbuilder("check", svc_lab, check=False)
    assert result.returncode == 0, result.stdout
    assert "13 passed, 0 failed" in result.stdout


def test_per_node_tables_read_back_as_planned(svc_lab, svc_file):
    plan = compile_plan(resolve_file(str(svc_file), SVC_LAB)[1].lab)
    tables = {}
    for node in plan.nodes:
        op = next(op for op in plan.steps[node] if isinstance(op, Nftables))
        text = dexec(f"{svc_lab}-{node}", "nft", "list", "table", "ip", "kube-proxy")
        tables[node] = parse_listing(text)
        assert tables[node] == listed(parse_transaction(op.payload)), node  # type: ignore[arg-type]
    assert tables["worker-0"] != tables["worker-1"]  # Local policies: each node balances over its own
    assert labbuilder("diff", svc_lab).stdout.strip() == f"lab {svc_lab}: pristine"


def test_a_service_without_endpoints_is_refused_at_once(svc_lab, svc_file):
    model = resolve_file(str(svc_file), SVC_LAB)[1].lab
    pod = next(p for p in model.pods if p.name.startswith("client"))
    ip = next(s.cluster_ip for s in model.services if s.name == "empty")
    argv = ["sh", "-c", f"s=$(date +%s%N); curl -s -m 3 http://{ip}/; echo rc=$? ms=$((($(date +%s%N)-s)/1000000))"]
    out = pod_exec(f"{svc_lab}-{pod.node}", pod.netns, *argv, check=False)
    rc, ms = (int(part.split("=")[1]) for part in out.split()[-2:])
    assert rc == 7 and ms < 1000, out  # connection refused by reject-chain, not a timeout
