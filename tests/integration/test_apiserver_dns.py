"""A cluster you can talk to, on the real engine: the apiserver speaks TLS with the lab's own CA,
the cluster DNS answers as CoreDNS's kubernetes plugin does, KTHW's smoke tests pass as written,
and reset brings back a deleted certificate and a killed apiserver."""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Iterator

import pytest

from labbuilder.compile.pki import lab_pki
from labbuilder.spec.lab_file import resolve_file
from tests.integration.conftest import ROOT, bring_up, dexec, labbuilder, pod_exec

pytestmark = pytest.mark.docker
TLS = "tlskthw"  # labs/kthw.yaml under our own name
DNS = "tlsdns"  # tests/integration/labs/dns.yaml: a headless service and named ports
KTHW = resolve_file(str(ROOT / "labs" / "kthw.yaml"), TLS)[1].lab
DNS_LAB = resolve_file(str(ROOT / "tests" / "integration" / "labs" / "dns.yaml"), DNS)[1].lab
SA_CA = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"


@pytest.fixture(scope="module")
def kthw(host_before) -> Iterator[str]:
    yield from bring_up(str(ROOT / "labs" / "kthw.yaml"), TLS)


@pytest.fixture(scope="module")
def dns(host_before) -> Iterator[str]:
    yield from bring_up(str(ROOT / "tests" / "integration" / "labs" / "dns.yaml"), DNS)


def busybox(lab, node: str = "worker-0"):
    return next(p for p in lab.pods if p.workload == "busybox" and p.node == node)


def in_pod(lab, pod, *argv: str, check: bool = True) -> str:
    return pod_exec(lab.container_name(pod.node), pod.netns, *argv, check=check)


def stderr_of(lab, pod, *argv: str) -> str:
    """Everything a command says, its errors and curl -v's lines (stderr) included; never fails."""
    return pod_exec(lab.container_name(pod.node), pod.netns, "sh", "-c", f"{shlex.join(argv)} 2>&1", check=False)


# -- the apiserver's face --------------------------------------------------------------------------
def test_version_over_tls_by_the_service_name_with_the_service_account_ca(kthw):
    pod = busybox(KTHW)
    out = in_pod(
        KTHW, pod, "curl", "-sS", "-m", "5", "--cacert", SA_CA, "https://kubernetes.default.svc.cluster.local/version"
    )
    version = json.loads(out)
    assert (version["major"], version["minor"], version["gitVersion"]) == ("1", "33", "v1.33.0")
    assert {"gitCommit", "gitTreeState", "buildDate", "goVersion", "compiler", "platform"} <= set(version)
    # The CA in the pod is the lab's, the one `labbuilder pki` hands out.
    assert in_pod(KTHW, pod, "cat", SA_CA) == lab_pki(KTHW).ca


def test_anonymous_gets_a_403_status_and_health_is_ok(kthw):
    pod = busybox(KTHW, "worker-1")
    out = in_pod(KTHW, pod, "curl", "-sk", "-m", "5", "-w", "\n%{http_code}", "https://10.32.0.1/api")
    body, code = out.rsplit("\n", 1)
    assert code == "403"
    assert json.loads(body) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'forbidden: User "system:anonymous" cannot get path "/api"',
        "reason": "Forbidden",
        "details": {},
        "code": 403,
    }
    for path in ("healthz", "livez", "readyz"):
        assert in_pod(KTHW, pod, "curl", "-sS", "-m", "5", "--cacert", SA_CA, f"https://10.32.0.1/{path}") == "ok"


def test_the_certificate_verifies_only_for_its_names(kthw):
    pod = busybox(KTHW, "worker-2")
    # A name the certificate does not hold, dialled at the apiserver's address.
    resolve = ("--resolve", "apiserver.example:443:10.32.0.1")
    wrong = stderr_of(KTHW, pod, "curl", "-sS", "-m", "5", "--cacert", SA_CA, *resolve, "https://apiserver.example/")
    assert "curl: (60)" in wrong and "'apiserver.example'" in wrong, wrong
    # Another lab's CA does not verify this lab's apiserver.
    other = lab_pki(resolve_file(str(ROOT / "labs" / "kthw.yaml"), "otherlab")[1].lab).ca
    worker = KTHW.container_name("worker-2")
    dexec(worker, "sh", "-c", f"printf '%s' '{other}' > /tmp/other-ca.pem")
    try:
        out = stderr_of(KTHW, pod, "curl", "-sS", "-m", "5", "--cacert", "/tmp/other-ca.pem", "https://10.32.0.1/")
        assert "curl: (60)" in out, out
    finally:
        dexec(worker, "rm", "-f", "/tmp/other-ca.pem")
    # TLS, ALPN http/1.1 only, and the certificate's subject, as curl -v shows them.
    verbose = stderr_of(KTHW, pod, "curl", "-sv", "-m", "5", "--cacert", SA_CA, "https://10.240.0.11:6443/healthz")
    assert "ALPN: server accepted http/1.1" in verbose, verbose
    assert "subject: C=US; L=Portland; ST=Oregon; O=Kubernetes; OU=Kubernetes The Hard Way; CN=kubernetes" in verbose
    assert "issuer: C=US; L=Portland; ST=Oregon; O=Kubernetes; OU=CA; CN=Kubernetes" in verbose


def test_kthws_smoke_tests_pass_as_written(kthw):
    """KTHW "Verification": curl --cacert ca.pem https://ADDRESS:6443/version from the workstation."""
    out = dexec(
        KTHW.router_name,
        "curl",
        "-sS",
        "-m",
        "5",
        "--cacert",
        "/var/lib/kubernetes/ca.pem",
        "https://10.240.0.12:6443/version",
    )
    assert json.loads(out)["gitVersion"] == "v1.33.0"
    result = labbuilder("check", kthw, "-o", "json", check=False)
    results = {r["name"]: r for r in json.loads(result.stdout)}
    assert result.returncode == 0, result.stdout
    for name in (
        "curl --cacert ca.pem https://controller-0:6443/version",
        "the apiserver answers /version through the kubernetes service",
        "nslookup kubernetes",
        "NodePort from outside the nodes",
    ):
        assert results[name]["passed"], results[name]
    assert results["the apiserver answers /version through the kubernetes service"]["kind"] == "http"


# -- DNS as CoreDNS answers ----------------------------------------------------------------------
def test_nslookup_kubernetes_busybox_and_dnsutils(kthw):
    pod = busybox(KTHW)
    # KTHW's DNS smoke test is busybox's nslookup. Like against CoreDNS, it also prints NXDOMAIN for
    # the other search domains it tried (and exits 1 for them): the answer is what counts.
    out = in_pod(KTHW, pod, "busybox", "nslookup", "kubernetes", check=False)
    assert "Name:\tkubernetes.default.svc.cluster.local\nAddress: 10.32.0.1" in out, out
    assert "Server:\t\t10.32.0.10" in out
    out = in_pod(KTHW, pod, "nslookup", "kubernetes")  # dnsutils' (bind9)
    assert re.search(r"Name:\s+kubernetes\.default\.svc\.cluster\.local\nAddress: 10\.32\.0\.1\b", out), out
    assert in_pod(KTHW, pod, "dig", "+short", "kubernetes.default.svc.cluster.local").split() == ["10.32.0.1"]
    assert "has address 10.32.0.2" in in_pod(KTHW, pod, "host", "nginx")


def test_unknown_names_in_the_cluster_domain_are_nxdomain(kthw):
    pod = busybox(KTHW, "worker-2")
    out = in_pod(KTHW, pod, "dig", "nothing.default.svc.cluster.local")
    assert "status: NXDOMAIN" in out, out
    assert in_pod(KTHW, pod, "getent", "hosts", "nothing", check=False) == ""


def test_headless_service_resolves_to_its_pods(dns):
    pod = busybox(DNS_LAB, "worker-1")
    web = sorted(str(p.ip) for p in DNS_LAB.pods if p.workload == "web")
    assert web == ["10.200.0.2", "10.200.1.2"]
    answer = in_pod(DNS_LAB, pod, "dig", "+short", "web-headless.default.svc.cluster.local")
    assert sorted(answer.split()) == web
    busybox_out = in_pod(DNS_LAB, pod, "busybox", "nslookup", "web-headless", check=False)
    assert all(f"Address: {ip}" in busybox_out for ip in web), busybox_out
    # The ClusterIP service over the same pods answers with its ClusterIP; the headless one has no rules.
    assert in_pod(DNS_LAB, pod, "dig", "+short", "web.default.svc.cluster.local").split() == ["10.32.0.2"]
    assert "web-headless" not in dexec(DNS_LAB.container_name("worker-1"), "iptables-save", "-t", "nat")
    # Each endpoint by name, and the pod behind the name answers.
    assert in_pod(DNS_LAB, pod, "dig", "+short", "10-200-0-2.web-headless.default.svc.cluster.local").split() == [
        "10.200.0.2"
    ]
    assert in_pod(DNS_LAB, pod, "curl", "-s", "-m", "5", "http://10-200-0-2.web-headless/").startswith("pod=web-")


def test_srv_records_for_named_ports(dns):
    pod = busybox(DNS_LAB, "worker-1")
    srv = in_pod(DNS_LAB, pod, "dig", "+short", "SRV", "_http._tcp.web.default.svc.cluster.local")
    assert srv.split() == ["0", "100", "80", "web.default.svc.cluster.local."]
    srv = in_pod(DNS_LAB, pod, "dig", "+short", "SRV", "_http._tcp.web-headless.default.svc.cluster.local")
    assert sorted(srv.splitlines()) == [
        "0 50 80 10-200-0-2.web-headless.default.svc.cluster.local.",
        "0 50 80 10-200-1-2.web-headless.default.svc.cluster.local.",
    ]
    srv = in_pod(DNS_LAB, pod, "dig", "+short", "SRV", "_https._tcp.kubernetes.default.svc.cluster.local")
    assert srv.split() == ["0", "100", "443", "kubernetes.default.svc.cluster.local."]
    srv = in_pod(DNS_LAB, pod, "busybox", "nslookup", "-type=srv", "_dns._udp.kube-dns.kube-system.svc.cluster.local")
    assert "0 100 53 kube-dns.kube-system.svc.cluster.local" in srv


def test_pod_records_for_every_pod(dns):
    pod = busybox(DNS_LAB, "worker-1")
    for other in DNS_LAB.pods:
        name = f"{str(other.ip).replace('.', '-')}.{other.namespace}.pod.cluster.local"
        assert in_pod(DNS_LAB, pod, "dig", "+short", name).split() == [str(other.ip)], name


def test_the_dns_labs_own_checks_pass_and_it_is_pristine(dns):
    result = labbuilder("check", dns, check=False)
    assert result.returncode == 0 and ", 0 failed" in result.stdout, result.stdout
    assert "v1.32.3" in result.stdout  # the version the lab file sets, read over TLS by the service's name
    pristine = labbuilder("diff", dns, check=False)
    assert pristine.stdout.strip() == f"lab {dns}: pristine", pristine.stdout


# -- reset brings the apiserver back ---------------------------------------------------------------
def test_reset_restores_a_deleted_certificate_and_a_killed_apiserver(kthw):
    controller = KTHW.container_name("controller-0")
    dexec(controller, "rm", "/var/lib/kubernetes/kubernetes.pem")
    pid = dexec(controller, "cat", "/run/labbuilder/pids/controller-0.podserver.pid").strip()
    dexec(controller, "kill", pid)  # the podserver labbuilder started, by its pid
    smoke = "curl --cacert ca.pem https://controller-0:6443/version"
    broken = labbuilder("check", kthw, "-o", "json", check=False)
    assert not {r["name"]: r for r in json.loads(broken.stdout)}[smoke]["passed"]
    diff = labbuilder("diff", kthw, check=False)
    assert diff.returncode == 1
    assert "controller-0: file /var/lib/kubernetes/kubernetes.pem missing" in diff.stdout
    assert "controller-0: process controller-0.podserver stopped" in diff.stdout
    reset = labbuilder("reset", kthw)
    assert "controller-0: file /var/lib/kubernetes/kubernetes.pem restored" in reset.stdout
    assert "controller-0: process controller-0.podserver restarted" in reset.stdout
    assert dexec(controller, "cat", "/var/lib/kubernetes/kubernetes.pem") == lab_pki(KTHW).cert
    for _ in range(20):  # the restarted podserver opens its sockets within moments
        fixed = labbuilder("check", kthw, "-o", "json", check=False)
        if fixed.returncode == 0:
            break
        time.sleep(0.5)
    assert {r["name"]: r for r in json.loads(fixed.stdout)}[smoke]["passed"], fixed.stdout
    assert labbuilder("diff", kthw, check=False).stdout.strip() == f"lab {kthw}: pristine"


def test_reset_restores_a_changed_service_account_ca(kthw):
    worker = KTHW.container_name("worker-1")
    dexec(worker, "sh", "-c", f"echo tampered > {SA_CA}")
    assert (
        "worker-1: file /run/secrets/kubernetes.io/serviceaccount/ca.crt changed"
        in labbuilder("diff", kthw, check=False).stdout
    )
    labbuilder("reset", kthw)
    assert dexec(worker, "cat", SA_CA) == lab_pki(KTHW).ca
