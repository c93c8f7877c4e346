"""The cluster DNS as CoreDNS's kubernetes plugin answers (dnsmasq's records, pure), headless
services (no ClusterIP, no kube-proxy rules) and the pod's resolv.conf as the kubelet writes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from labbuilder.compile import kubelet
from labbuilder.compile.kubeproxy import kube_proxy_tables
from labbuilder.compile.netfilter import render_restore
from labbuilder.compile.ops import Process, WriteFile
from labbuilder.compile.paths import DNSMASQ_CONF
from labbuilder.compile.plan import compile_plan
from labbuilder.errors import SpecError
from labbuilder.spec import refs
from labbuilder.spec.lab_file import resolve_file
from labbuilder.spec.load import load, load_text
from labbuilder.spec.resolve import build_model

DNS_LAB = Path(__file__).resolve().parents[1] / "integration" / "labs" / "dns.yaml"
LAB = resolve_file(str(DNS_LAB))[1].lab
KTHW = build_model(load("kthw")).lab


def records(lab=LAB) -> list[str]:
    return kubelet.dns_records(lab)


def test_dnsmasq_is_authoritative_for_the_domain_and_reads_its_records_from_a_file():
    argv = kubelet.dnsmasq_argv(LAB)
    assert argv[0] == "dnsmasq" and "--no-resolv" in argv and "--keep-in-foreground" in argv
    assert "--local=/cluster.local/" in argv  # unknown names in the domain: NXDOMAIN, never forwarded
    assert f"--conf-file={DNSMASQ_CONF}" in argv and "--local-ttl=5" in argv
    plan = compile_plan(LAB)
    dns_pod = next(p for p in LAB.pods if p.app == "dns")
    ops = plan.steps[dns_pod.node]
    conf = next(op for op in ops if isinstance(op, WriteFile) and op.path == DNSMASQ_CONF)
    assert conf.content.splitlines()[1:] == records()
    process = next(op for op in ops if isinstance(op, Process) and op.name == f"{dns_pod.name}.dns")
    assert process.argv == argv and process.ns.netns == dns_pod.netns
    # Only the DNS pod's node holds the records.
    assert [key for key, op in plan.ops() if isinstance(op, WriteFile) and op.path == DNSMASQ_CONF] == [dns_pod.node]


def test_a_records_for_cluster_ip_services():
    assert "host-record=kubernetes.default.svc.cluster.local,10.32.0.1" in records()
    assert "host-record=kube-dns.kube-system.svc.cluster.local,10.32.0.10" in records()
    assert "host-record=web.default.svc.cluster.local,10.32.0.2" in records()


def test_srv_records_for_named_ports():
    assert (
        "srv-host=_https._tcp.kubernetes.default.svc.cluster.local,kubernetes.default.svc.cluster.local,443,0,100"
        in records()
    )
    assert (
        "srv-host=_dns._udp.kube-dns.kube-system.svc.cluster.local,kube-dns.kube-system.svc.cluster.local,53,0,100"
        in (records())
    )
    assert "srv-host=_http._tcp.web.default.svc.cluster.local,web.default.svc.cluster.local,80,0,100" in records()
    # KTHW's nginx port has no name: no SRV record for it, as in CoreDNS.
    assert not [r for r in records(KTHW) if r.startswith("srv-host=") and ".nginx." in r]


def test_headless_service_answers_with_its_pods_and_an_srv_per_endpoint():
    web = [p for p in LAB.pods if p.workload == "web"]
    assert [str(p.ip) for p in web] == ["10.200.0.2", "10.200.1.2"]
    name = "web-headless.default.svc.cluster.local"
    headless = [r for r in records() if name in r]
    assert headless == [
        f"host-record={name},10.200.0.2",
        f"host-record={name},10.200.1.2",
        f"host-record=10-200-0-2.{name},10.200.0.2",
        f"host-record=10-200-1-2.{name},10.200.1.2",
        f"srv-host=_http._tcp.{name},10-200-0-2.{name},80,0,50",  # CoreDNS: weight 100 / 2 records
        f"srv-host=_http._tcp.{name},10-200-1-2.{name},80,0,50",
    ]


def test_a_pod_record_for_every_pod():
    pods = [r for r in records() if ".pod.cluster.local" in r]
    assert pods == [f"host-record={kubelet.dashed(p.ip)}.{p.namespace}.pod.cluster.local,{p.ip}" for p in LAB.pods]
    assert "host-record=10-200-0-3.kube-system.pod.cluster.local,10.200.0.3" in pods  # the DNS pod itself
    assert len(pods) == len(LAB.pods) == 4


def test_another_domain_is_used_everywhere():
    text = "name: t\ncluster: {domain: lab.internal}\nnodes: [{name: a}]\n"
    lab = build_model(load_text(text, "lab.yaml")).lab
    assert "--local=/lab.internal/" in kubelet.dnsmasq_argv(lab)
    assert "host-record=kubernetes.default.svc.lab.internal,10.32.0.1" in kubelet.dns_records(lab)
    pod = lab.pods[0]
    assert kubelet.resolv_conf(lab, pod) == (
        "search kube-system.svc.lab.internal svc.lab.internal lab.internal\nnameserver 10.32.0.10\noptions ndots:5\n"
    )


def test_resolv_conf_is_the_kubelets():
    """kubelet (ClusterFirst): search <ns>.svc.<domain> svc.<domain> <domain>, the cluster DNS, ndots:5."""
    busybox = refs.pod(KTHW, "busybox@worker-0")
    assert kubelet.resolv_conf(KTHW, busybox) == (
        "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.32.0.10\noptions ndots:5\n"
    )


def test_headless_services_get_no_kube_proxy_rules_and_no_address():
    svc = next(s for s in LAB.services if s.name == "web-headless")
    assert svc.headless and svc.cluster_ip is None
    assert [str(e.ip) for e in svc.endpoints["http"]] == ["10.200.0.2", "10.200.1.2"]
    rules = render_restore(kube_proxy_tables(LAB))
    assert "web-headless" not in rules and "default/web:http" in rules
    with pytest.raises(refs.RefError, match="headless"):
        refs.target(LAB, "service/web-headless")


def test_headless_is_not_for_nodeports_nor_the_builtins(lab_file):
    text = (
        "name: t\nnodes: [{name: a}]\nservices:\n  - {name: s, type: NodePort, clusterIP: None, ports: [{port: 80}]}\n"
    )
    with pytest.raises(SpecError) as info:
        resolve_file(lab_file(text))
    assert "clusterIP may not be None for a NodePort service" in str(info.value.problems[0])
    text = "name: t\nnodes: [{name: a}]\nservices:\n  - {name: kubernetes, clusterIP: None, ports: [{port: 443}]}\n"
    with pytest.raises(SpecError) as info:
        resolve_file(lab_file(text))
    assert "default/kubernetes always has clusterIP 10.32.0.1" in str(info.value.problems[0])
    text = "name: t\nnodes: [{name: a}]\nservices:\n  - {name: s, clusterIP: none, ports: [{port: 80}]}\n"
    with pytest.raises(SpecError):
        resolve_file(lab_file(text))
