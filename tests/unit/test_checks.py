"""Checks resolved against the model (pure) and judged on captured outputs."""

from __future__ import annotations

import pytest

from labbuilder.errors import SpecError
from labbuilder.observe.checks import Result, judge_nat, junit_xml, probe_for
from labbuilder.spec import refs
from labbuilder.spec.load import load, load_text
from labbuilder.spec.model import Check, HttpCheck
from labbuilder.spec.resolve import build_model

KTHW = build_model(load("kthw")).lab


def test_reach_probe_commands():
    icmp = probe_for(KTHW, Check("c", "pod/busybox@worker-0", "pod/nginx@worker-2", protocol="icmp"))
    assert icmp.place.key == "worker-0" and icmp.place.netns == refs.pod(KTHW, "busybox@worker-0").netns
    assert icmp.argv == ("ping", "-c", "1", "-W", "3", "10.200.2.2")
    tcp = probe_for(KTHW, Check("c", "router", "service/nginx"))
    assert tcp.place.key == "router" and tcp.argv == ("nc", "-z", "-w", "3", "10.32.0.2", "80")
    dns = probe_for(KTHW, Check("c", "pod/busybox@worker-0", dns="kube-dns.kube-system.svc.cluster.local"))
    assert dns.argv == ("getent", "hosts", "kube-dns.kube-system.svc.cluster.local")
    assert dns.judge(0, "10.32.0.10      kube-dns.kube-system.svc.cluster.local\n") == (
        True,
        "answered 10.32.0.10, expected 10.32.0.10",
    )
    assert dns.judge(2, "")[0] is False


def test_expectations_are_judged_both_ways():
    reach = probe_for(KTHW, Check("c", "router", "10.240.0.20:31088"))
    no_reach = probe_for(KTHW, Check("c", "router", "10.240.0.20:31088", expect="no-reach"))
    assert reach.judge(0, "")[0] and not reach.judge(1, "")[0]
    assert no_reach.judge(1, "")[0] and not no_reach.judge(0, "")[0]


def test_route_check_matches_the_start_of_a_route_line():
    probe = probe_for(KTHW, Check("c", on="router", route="10.200.1.0/24 via 10.240.0.21"))
    table = "10.200.0.0/24 via 10.240.0.20 dev lab0 \n10.200.1.0/24 via 10.240.0.21 dev lab0 \n"
    assert probe.judge(0, table) == (True, "10.200.1.0/24 via 10.240.0.21 dev lab0")
    assert probe.judge(0, table.replace("10.200.1.0", "10.200.9.0"))[0] is False


def test_nat_is_read_from_conntrack_lines():
    # seed 004: the reply goes to the node address, so the source was translated.
    snat = (
        "icmp     1 29 src=10.200.0.21 dst=10.200.1.15 type=8 code=0 id=1280 src=10.200.1.15 "
        "dst=10.240.0.20 type=0 code=0 id=1280 mark=0 use=1"
    )
    plain = snat.replace("dst=10.240.0.20 type=0", "dst=10.200.0.21 type=0")
    assert judge_nat("snat", snat, "10.200.0.21") == (True, "10.200.0.21 → 10.240.0.20 (SNAT)")
    assert judge_nat("none", plain, "10.200.0.21") == (True, "no translation")
    assert judge_nat("snat", plain, "10.200.0.21")[0] is False
    dnat = (
        "tcp 6 117 TIME_WAIT src=10.200.0.3 dst=10.32.0.2 sport=40000 dport=80 src=10.200.2.2 "
        "dst=10.200.0.3 sport=80 dport=40000 [ASSURED] mark=0 use=1"
    )
    assert judge_nat("dnat", dnat, "10.200.0.3") == (True, "10.32.0.2 → 10.200.2.2 (DNAT)")
    assert judge_nat("dnat", "", "10.200.0.3") == (False, "no conntrack entry for the probe")


def test_unknown_names_in_a_lab_file_are_located_errors():
    text = "name: t\nnodes: [{name: a}]\nchecks:\n  - {from: pod/ghost, to: node/a}\n"
    with pytest.raises(SpecError) as info:
        build_model(load_text(text, "lab.yaml"))
    assert [str(p) for p in info.value.problems] == [
        "lab.yaml:4:5: check 'pod/ghost → node/a': no pod 'ghost' in lab t (pods: coredns-pswscvxlp9-7754w@a)"
    ]


def test_junit_report_counts_failures():
    results = [Result("a", "reach", "x → y", True, "reached"), Result("b", "route", "r", False, "route missing")]
    xml = junit_xml("kthw", results)
    assert 'tests="2" failures="1"' in xml and '<failure message="route missing">r</failure>' in xml


# -- HTTP(S) checks --------------------------------------------------------------------------------
def lab_with_checks(checks: str):
    return build_model(
        load_text(f"name: t\nnodes: [{{name: c, role: controller}}, {{name: w}}]\nchecks:\n{checks}", "lab.yaml")
    )


def test_http_check_is_curl_with_the_lab_ca_in_the_source_namespace():
    [check] = [c for c in KTHW.checks if c.name == "the apiserver answers /version through the kubernetes service"]
    assert check.http == HttpCheck("/version", 200, tls=True, ca="lab", contains="gitVersion")
    probe = probe_for(KTHW, check)
    assert probe.place.netns == refs.pod(KTHW, "busybox@worker-0").netns
    assert probe.argv == (
        "curl",
        "-sS",
        "--max-time",
        "3",
        "--cacert",
        "/var/lib/kubernetes/ca.pem",
        "-w",
        "\n@http %{http_code}\n",
        "https://10.32.0.1:443/version",
    )
    version = '{\n  "major": "1",\n  "gitVersion": "v1.33.0"\n}\n'
    assert probe.judge(0, version + "\n@http 200\n") == (True, "HTTP 200, body holds 'gitVersion'")
    assert probe.judge(0, "{}\n\n@http 200\n") == (False, "HTTP 200, the body lacks 'gitVersion'")
    failed = "\n@http 000\ncurl: (60) SSL certificate problem: unable to get local issuer certificate\n"
    assert probe.judge(60, failed) == (
        False,
        "no answer: curl: (60) SSL certificate problem: unable to get local issuer certificate",
    )
    assert probe.description.endswith("(GET https://10.32.0.1:443/version) HTTP 200")


def test_http_check_from_the_workstation_to_a_controller_port():
    [check] = [c for c in KTHW.checks if c.name.startswith("curl --cacert ca.pem")]
    probe = probe_for(KTHW, check)
    assert probe.place.key == "router" and probe.argv[-1] == "https://10.240.0.10:6443/version"


def test_http_forms_insecure_plain_host_status_and_no_reach():
    lab = lab_with_checks(
        "  - {from: pod/coredns, to: service/kubernetes, http: {path: /api, status: 403, tls: {insecure: true}}}\n"
        "  - {from: router, to: '10.32.0.1', http: {tls: {ca: lab}, host: kubernetes.default.svc.cluster.local}}\n"
        "  - {from: router, to: node/w, port: 8080, http: {}, expect: no-reach}\n"
    ).lab
    forbidden, named, plain = (probe_for(lab, c) for c in lab.checks)
    assert forbidden.check.name == "pod/coredns → service/kubernetes /api"
    assert "-k" in forbidden.argv and "-o" in forbidden.argv and forbidden.argv[-1] == "https://10.32.0.1:443/api"
    assert forbidden.judge(0, "\n@http 403\n") == (True, "HTTP 403")
    assert forbidden.judge(0, "\n@http 200\n") == (False, "HTTP 200, expected 403")
    assert named.argv[-1] == "https://kubernetes.default.svc.cluster.local:443/"  # 443: the scheme's port
    assert plain.argv[-1] == "http://10.240.0.3:8080/" and "--cacert" not in plain.argv and "-k" not in plain.argv
    assert plain.judge(7, "\n@http 000\ncurl: (7) Failed to connect\n") == (
        True,
        "no answer: curl: (7) Failed to connect",
    )
    assert plain.judge(0, "\n@http 404\n") == (False, "answered HTTP 404")


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("{from: router, to: node/c, protocol: udp, http: {}}", "4:5: check 'router → node/c /': an http check goes "),
        ("{from: router, to: node/c, http: {tls: {}}}", "4:39: checks.0.http.tls: matches none of the accepted forms"),
        ("{from: router, to: node/c, http: {tls: {ca: lab, insecure: true}}}", "4:39: checks.0.http.tls: matches none"),
        ("{from: router, to: node/c, http: {path: version}}", "4:39: checks.0.http.path: 'version' does not match"),
        ("{on: router, route: default, http: {}}", "4:5: checks.0: matches none of the accepted forms"),
        ("{from: router, dns: kubernetes, http: {}}", "4:5: checks.0: matches none of the accepted forms"),
    ],
)
def test_http_check_mistakes_are_located(item: str, message: str):
    with pytest.raises(SpecError) as info:
        lab_with_checks(f"  - {item}\n")
    assert [message in str(p) for p in info.value.problems] == [True], info.value.problems


def test_dns_answers_for_headless_services_and_pod_records():
    from pathlib import Path

    from labbuilder.spec.lab_file import resolve_file

    lab = resolve_file(str(Path(__file__).resolve().parents[1] / "integration" / "labs" / "dns.yaml"))[1].lab
    headless = probe_for(lab, Check("c", "pod/busybox", dns="web-headless.default.svc.cluster.local"))
    assert headless.judge(0, "10.200.1.2      web-headless.default.svc.cluster.local\n")[0]
    assert headless.judge(0, "10.32.0.2      web-headless.default.svc.cluster.local\n") == (
        False,
        "answered 10.32.0.2, expected 10.200.0.2 or 10.200.1.2",
    )
    pod = probe_for(lab, Check("c", "pod/busybox", dns="10-200-0-2.default.pod.cluster.local"))
    assert pod.judge(0, "10.200.0.2 10-200-0-2.default.pod.cluster.local\n") == (
        True,
        "answered 10.200.0.2, expected 10.200.0.2",
    )
    short = probe_for(KTHW, Check("c", "pod/busybox@worker-0", dns="kubernetes"))
    assert short.judge(0, "10.32.0.1 kubernetes.default.svc.cluster.local\n")[0]
