"""kube-router's NetworkPolicy enforcement on the real engine, with real packets, in every CNI mode.

Each lab (tests/integration/labs/kr-*.yaml; kr-nft is the bridge lab with kube-proxy in nftables
mode): namespaces x and y, pods a (worker-0) and b
(worker-1) in each; x is default-deny for ingress and x/b lets namespace y in on port 80. The
matrix measured with TCP connects equals the one the policies imply; a denied connect is refused
at once (kube-router's REJECT) and shows on the NFLOG group; services are judged at the endpoint
pod; `diff`/`reset` see and repair a sabotaged ipset and a flushed policy chain.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator

import pytest

from labbuilder.compile.netpol import names
from labbuilder.compile.netpol.kube_router import kube_router
from labbuilder.compile.netpol.semantics import expected_matrix
from labbuilder.spec.lab_file import resolve_file
from labbuilder.spec.model import Lab, Pod
from labbuilder.spec.truthtable import matrix_pods
from tests.integration.conftest import ROOT, bring_up, dexec, labbuilder, sh

pytestmark = pytest.mark.docker


def model(mode: str) -> Lab:
    return resolve_file(str(ROOT / f"tests/integration/labs/kr-{mode}.yaml"))[1].lab


def curl(lab: Lab, src: Pod, url: str) -> tuple[int, str, float]:
    """(curl's exit code, HTTP status, seconds) of one GET from pod `src`."""
    script = (
        f"s=$(date +%s.%N); o=$(ip netns exec {src.netns} curl -s -m 3 -o /dev/null -w '%{{http_code}}' {url}); "
        'c=$?; echo "$o $c $s $(date +%s.%N)"'
    )
    status, code, start, end = dexec(lab.container_name(src.node), "sh", "-c", script).split()
    return int(code), status, float(end) - float(start)


@pytest.fixture(scope="module", params=["bridge", "ptp", "vxlan", "nft"])
def kr(request, host_before) -> Iterator[Lab]:
    lab = model(request.param)
    for _ in bring_up(str(ROOT / f"tests/integration/labs/kr-{request.param}.yaml"), lab.name):
        yield lab


def pod(lab: Lab, ref: str) -> Pod:
    return matrix_pods(lab, 80, "TCP")[ref]


def test_measured_matrix_equals_the_expected_one(kr):
    """`check --matrix --expect`: every pod to every pod on 80/tcp with packets, beside the table
    the policies imply; exit 0 only when they agree."""
    result = labbuilder("check", kr.name, "--matrix", "--expect", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    # The policies do deny something, in the same node (bridged or ptp) and across nodes.
    expected = expected_matrix(kr, 80, "TCP")
    assert expected.mark("y/a", "x/a") == "X" and expected.mark("x/a", "x/b") == "X"
    assert expected.mark("y/a", "x/b") == "."
    assert "measured = expected: all 16 cells agree" in result.stdout


def test_a_denied_connect_is_refused_at_once_and_logged(kr):
    if kr.name != "kr-bridge":
        pytest.skip("once is enough: the REJECT and its log are the same rules in every mode")
    src, dst = pod(kr, "y/a"), pod(kr, "x/a")
    node = kr.container_name(dst.node)
    # A learner's view of kube-router's NFLOG group: tcpdump on nflog:100.
    capture = subprocess.Popen(
        ["docker", "exec", node, "timeout", "8", "tcpdump", "-l", "-n", "-i", "nflog:100", "-c", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    time.sleep(1.0)
    code, status, seconds = curl(kr, src, f"http://{dst.ip}/")
    logged, _ = capture.communicate(timeout=15)
    assert (code, status) == (7, "000"), "curl: connection refused (an ICMP port unreachable), not a timeout"
    assert seconds < 1.0
    assert re.search(rf"{re.escape(str(src.ip))}\.\d+ > {re.escape(str(dst.ip))}\.80: Flags \[S\]", logged), logged
    # The pod's firewall counted it on its NFLOG and REJECT rules.
    saved = dexec(node, "iptables-save", "-c", "-t", "filter")
    chain = names.pod_chain(dst.namespace, dst.name)
    for target in ("NFLOG", "REJECT"):
        line = next(r for r in saved.splitlines() if r.startswith("[") and f"-A {chain} " in r and f"-j {target}" in r)
        assert not line.startswith("[0:"), line


def test_services_are_judged_at_the_endpoint_pod(kr):
    if kr.name == "kr-vxlan":
        pytest.skip("bridge and ptp cover the same-node and the routed DNAT paths, nft the nftables DNAT")
    src = pod(kr, "y/a")
    to_a = next(s for s in kr.services if s.ref == "x/a").cluster_ip
    to_b = next(s for s in kr.services if s.ref == "x/b").cluster_ip
    assert curl(kr, src, f"http://{to_a}/")[:2] == (7, "000")  # x/a, denied: refused after DNAT
    assert curl(kr, src, f"http://{to_b}/")[:2] == (0, "200")  # x/b, allowed from y


def test_kube_router_names_on_the_node(kr):
    if kr.name != "kr-ptp":
        pytest.skip("one mode is enough: the names do not depend on it")
    saved = dexec(kr.container_name("worker-1"), "iptables-save", "-t", "filter")
    b = pod(kr, "x/b")
    assert '-A FORWARD -m comment --comment "kube-router netpol - TEMCG2JMHZYE7H7T" -j KUBE-ROUTER-FORWARD' in saved
    assert f":{names.pod_chain('x', b.name)} - [0:0]" in saved
    assert f":{names.policy_chain('x', 'allow-y-to-b')} - [0:0]" in saved
    assert f"-m set --match-set {names.ingress_pod_set('x', 'allow-y-to-b', 0)} src" in saved
    sets = dexec(kr.container_name("worker-1"), "ipset", "list", "-n").split()
    assert sorted(sets) == sorted(s.name for s in kube_router(kr).ipsets)


def test_diff_sees_a_sabotaged_ipset_and_reset_repairs_it(kr):
    if kr.name != "kr-bridge":
        pytest.skip("diff and reset read the same state in every mode")
    src, dst = pod(kr, "y/a"), pod(kr, "x/b")
    node = kr.container_name(dst.node)
    allowed = names.ingress_pod_set("x", "allow-y-to-b", 0)
    chain = names.policy_chain("x", "allow-y-to-b")
    dexec(node, "ipset", "del", allowed, str(src.ip))
    dexec(node, "ipset", "add", allowed, str(pod(kr, "x/a").ip), "timeout", "0")
    assert curl(kr, src, f"http://{dst.ip}/")[:2] == (7, "000")  # y/a lost its way into x/b
    found = labbuilder("diff", kr.name, check=False)
    assert found.returncode == 1
    assert f"worker-1: ipset {allowed} member {src.ip} missing" in found.stdout
    assert f"worker-1: ipset {allowed} member {pod(kr, 'x/a').ip} added" in found.stdout
    dexec(node, "iptables", "-F", chain)
    assert f"iptables filter ({chain}) changed" in labbuilder("diff", kr.name, check=False).stdout
    repaired = labbuilder("reset", kr.name)
    assert f"stray ipset {allowed} member {pod(kr, 'x/a').ip}" in repaired.stdout
    assert labbuilder("diff", kr.name).returncode == 0
    assert curl(kr, src, f"http://{dst.ip}/")[:2] == (0, "200")
    assert str(pod(kr, "x/a").ip) not in sh("docker", "exec", node, "ipset", "list", allowed).stdout


def test_trace_shows_the_policy_that_allowed_and_the_reject_that_refused(kr):
    if kr.name not in ("kr-bridge", "kr-nft"):  # xtables-monitor, and nft monitor beside kube-proxy's nftables
        pytest.skip("trace reads the same chains in every CNI mode")
    refused = labbuilder("trace", kr.name, "y/a", "x/a:80").stdout
    chain = names.pod_chain("x", pod(kr, "x/a").name)
    assert f"kube-router REJECTs it in {chain}, the firewall of x/{pod(kr, 'x/a').name}" in refused
    assert "result: refused" in refused
    allowed = labbuilder("trace", kr.name, "y/a", "x/b:80").stdout
    assert f"policy x/allow-y-to-b allows it ({names.policy_chain('x', 'allow-y-to-b')}" in allowed
    assert "KUBE-NWPLCY-DEFAULT lets it through" in allowed  # y/a's own egress: no policy isolates it
